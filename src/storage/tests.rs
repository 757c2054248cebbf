//! Unit tests of the store (see also `proptests`).
