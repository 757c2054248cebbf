//! Model-based property test.
