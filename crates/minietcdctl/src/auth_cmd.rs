//! etcdctl's `user`, `role` and `auth` commands: the same arguments, flags and output
//! (`printer_simple.go`'s wording) on the client's Auth service.

use std::io::BufRead;

use clap::{Args, Subcommand};
use minietcd_client::pb::authpb::permission::Type as PermType;
use minietcd_client::pb::etcdserverpb::AuthRoleGetResponse;
use minietcd_client::{prefix_range_end, Client, ClientError};

use crate::ops::{Failure, EXIT_BAD_ARGS, EXIT_IO};

/// The message of a refused `auth enable` whose root user lacks the root role.
const MSG_ROOT_ROLE_NOT_EXIST: &str = "etcdserver: root user does not have root role";

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a new user
    Add {
        /// name or name:password (not `user`: that id is the global `--user` flag's)
        #[arg(value_name = "USER")]
        name_password: String,
        /// Read password from stdin instead of interactive terminal
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        interactive: bool,
        /// Create a user without password (CN based auth only)
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user
    Delete { name: String },
    /// Gets detailed information of a user
    Get {
        name: String,
        /// Show permissions of roles granted to the user
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users
    List,
    /// Changes password of user
    Passwd {
        name: String,
        /// If true, read password from stdin instead of interactive terminal
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        interactive: bool,
    },
    /// Grants a role to a user
    GrantRole { name: String, role: String },
    /// Revokes a role from a user
    RevokeRole { name: String, role: String },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Adds a new role
    Add { name: String },
    /// Deletes a role
    Delete { name: String },
    /// Gets detailed information of a role
    Get { name: String },
    /// Lists all roles
    List,
    /// Grants a key to a role
    GrantPermission(PermArgs),
    /// Revokes a key from a role
    RevokePermission(PermArgs),
}

/// `role grant-permission <role> <type> <key> [end]` / `role revoke-permission <role> <key>
/// [end]`: the positional arguments, checked as etcdctl checks them.
#[derive(Args)]
pub struct PermArgs {
    pub args: Vec<String>,
    /// grant a prefix permission
    #[arg(long)]
    pub prefix: bool,
    /// grant a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Enables authentication
    Enable,
    /// Disables authentication
    Disable,
}

fn bad(msg: &str) -> Failure {
    Failure::new(EXIT_BAD_ARGS, msg.to_string())
}

/// A password read from stdin (etcdctl's `fmt.Scanf("%s")`: the first word). An interactive
/// terminal prompt is not offered: `--interactive=false` or `name:password` is needed.
fn read_password(name: &str, interactive: bool) -> Result<String, Failure> {
    if interactive {
        return Err(bad(&format!(
            "reading the password of {name} from a terminal is not supported; pass \
             --interactive=false and the password on stdin"
        )));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::new(EXIT_IO, e.to_string()))?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

pub async fn run_user(client: &Client, cmd: &UserCommand) -> Result<String, Failure> {
    let a = client.auth();
    Ok(match cmd {
        UserCommand::Add {
            name_password: user,
            interactive,
            no_password,
        } => {
            let (name, password) = if *no_password {
                (user.clone(), String::new())
            } else {
                match user.split_once(':') {
                    Some((n, p)) => {
                        if n.is_empty() {
                            return Err(bad("empty user name is not allowed"));
                        }
                        (n.to_string(), p.to_string())
                    }
                    None => (user.clone(), read_password(user, *interactive)?),
                }
            };
            a.user_add(&name, &password, *no_password).await?;
            format!("User {name} created\n")
        }
        UserCommand::Delete { name } => {
            a.user_delete(name).await?;
            format!("User {name} deleted\n")
        }
        UserCommand::Get { name, detail } => {
            let r = a.user_get(name).await?;
            let mut out = format!("User: {name}\n");
            if *detail {
                for role in &r.roles {
                    out.push('\n');
                    out.push_str(&role_text(role, &a.role_get(role).await?));
                }
            } else {
                out.push_str("Roles:");
                for role in &r.roles {
                    out.push(' ');
                    out.push_str(role);
                }
                out.push('\n');
            }
            out
        }
        UserCommand::List => a
            .user_list()
            .await?
            .users
            .iter()
            .map(|u| format!("{u}\n"))
            .collect(),
        UserCommand::Passwd { name, interactive } => {
            let password = read_password(name, *interactive)?;
            a.user_change_password(name, &password).await?;
            "Password updated\n".to_string()
        }
        UserCommand::GrantRole { name, role } => {
            a.user_grant_role(name, role).await?;
            format!("Role {role} is granted to user {name}\n")
        }
        UserCommand::RevokeRole { name, role } => {
            a.user_revoke_role(name, role).await?;
            format!("Role {role} is revoked from user {name}\n")
        }
    })
}

/// etcdctl's `permRange`: the key and range end of a permission from its arguments.
fn perm_range(args: &[String], p: &PermArgs) -> Result<(String, String), Failure> {
    let key = args.first().cloned().unwrap_or_default();
    if p.prefix && p.from_key {
        return Err(bad("--from-key and --prefix flags are mutually exclusive"));
    }
    if key.is_empty() {
        let end = if p.prefix || p.from_key { "\0" } else { "" };
        return Ok(("\0".into(), end.into()));
    }
    let end = match args.get(1) {
        None if p.prefix => String::from_utf8_lossy(&prefix_range_end(key.as_bytes())).into_owned(),
        None if p.from_key => "\0".into(),
        None => String::new(),
        Some(_) if p.prefix => return Err(bad("unexpected endkey argument with --prefix flag")),
        Some(_) if p.from_key => {
            return Err(bad("unexpected endkey argument with --from-key flag"))
        }
        Some(e) => e.clone(),
    };
    Ok((key, end))
}

/// etcdctl's `StrToPermissionType`.
fn perm_type(s: &str) -> Result<PermType, Failure> {
    match s.to_uppercase().as_str() {
        "READ" => Ok(PermType::Read),
        "WRITE" => Ok(PermType::Write),
        "READWRITE" => Ok(PermType::Readwrite),
        _ => Err(bad(&format!("invalid permission type: {s}"))),
    }
}

/// etcdctl's simple printing of one permission range.
fn range_text(key: &str, end: &str) -> String {
    let mut s = if end == "\0" {
        format!("\t[{key}, <open ended>")
    } else {
        format!("\t[{key}, {end})")
    };
    if String::from_utf8_lossy(&prefix_range_end(key.as_bytes())) == end {
        s.push_str(&format!(" (prefix {key})"));
    }
    s.push('\n');
    s
}

/// etcdctl's `RoleGet` output.
fn role_text(role: &str, r: &AuthRoleGetResponse) -> String {
    let mut out = format!("Role {role}\n");
    for (title, wanted) in [
        ("KV Read:\n", PermType::Read),
        ("KV Write:\n", PermType::Write),
    ] {
        out.push_str(title);
        for p in &r.perm {
            let t = PermType::try_from(p.perm_type).unwrap_or(PermType::Read);
            if t != wanted && t != PermType::Readwrite {
                continue;
            }
            let key = String::from_utf8_lossy(&p.key);
            if p.range_end.is_empty() {
                out.push_str(&format!("\t{key}\n"));
            } else {
                out.push_str(&range_text(&key, &String::from_utf8_lossy(&p.range_end)));
            }
        }
    }
    out
}

pub async fn run_role(client: &Client, cmd: &RoleCommand) -> Result<String, Failure> {
    let a = client.auth();
    Ok(match cmd {
        RoleCommand::Add { name } => {
            a.role_add(name).await?;
            format!("Role {name} created\n")
        }
        RoleCommand::Delete { name } => {
            a.role_delete(name).await?;
            format!("Role {name} deleted\n")
        }
        RoleCommand::Get { name } => role_text(name, &a.role_get(name).await?),
        RoleCommand::List => a
            .role_list()
            .await?
            .roles
            .iter()
            .map(|r| format!("{r}\n"))
            .collect(),
        RoleCommand::GrantPermission(p) => {
            if p.args.len() < 3 {
                return Err(bad("role grant command requires role name, permission type, and key [endkey] as its argument"));
            }
            let t = perm_type(&p.args[1])?;
            let (key, end) = perm_range(&p.args[2..], p)?;
            a.role_grant_permission(&p.args[0], t, key, end).await?;
            format!("Role {} updated\n", p.args[0])
        }
        RoleCommand::RevokePermission(p) => {
            if p.args.len() < 2 {
                return Err(bad("role revoke-permission command requires role name and key [endkey] as its argument"));
            }
            let (key, end) = perm_range(&p.args[1..], p)?;
            a.role_revoke_permission(&p.args[0], key, end.clone())
                .await?;
            let (role, key) = (&p.args[0], &p.args[1]);
            if end.is_empty() {
                format!("Permission of key {key} is revoked from role {role}\n")
            } else if end == "\0" {
                format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
            } else {
                format!("Permission of range [{key}, {end}) is revoked from role {role}\n")
            }
        }
    })
}

pub async fn run_auth(client: &Client, cmd: &AuthCommand) -> Result<String, Failure> {
    let a = client.auth();
    Ok(match cmd {
        AuthCommand::Enable => {
            // etcdctl adds the root role and grants it to root when that is what is missing.
            loop {
                match a.auth_enable().await {
                    Ok(_) => break,
                    Err(ClientError::Server { message, .. })
                        if message == MSG_ROOT_ROLE_NOT_EXIST =>
                    {
                        a.role_add("root").await?;
                        a.user_grant_role("root", "root").await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            "Authentication Enabled\n".to_string()
        }
        AuthCommand::Disable => {
            a.auth_disable().await?;
            "Authentication Disabled\n".to_string()
        }
    })
}
