//! etcdctl's `user`, `role` and `auth` commands: the same arguments, flags and output
//! (`printer_simple.go`'s wording) on the client's Auth service.

use std::io::BufRead;

use clap::{Args, Subcommand};
use minietcd_client::pb::authpb::permission::Type as PermType;
use minietcd_client::pb::etcdserverpb::{AuthRoleGetResponse, ResponseHeader};
use minietcd_client::{prefix_range_end, Client, ClientError};

use crate::fields;
use crate::json::{self, Obj};
use crate::ops::{Failure, EXIT_BAD_ARGS, EXIT_IO};
use crate::printer::{unsupported, Format};

/// etcdctl's `-w json` of an auth response (Go's JSON of the response struct): its header,
/// then what `fields` adds.
fn json_of(header: Option<&ResponseHeader>, fields: impl FnOnce(Obj) -> Obj) -> String {
    fields(Obj::new().opt("header", json::header(header))).build() + "\n"
}

/// The output in `format`: etcdctl's line, the response's JSON or its fields (`None`:
/// etcdctl has no fields printer for the command).
fn pick(
    format: Format,
    simple: String,
    json: impl FnOnce() -> String,
    fields: Option<String>,
) -> Result<String, Failure> {
    match format {
        Format::Simple => Ok(simple),
        Format::Json => Ok(json()),
        Format::Fields => fields.ok_or_else(|| unsupported(format)),
        Format::Table => Err(unsupported(format)),
    }
}

/// The fields of a response that prints its header only.
fn hdr(h: Option<&ResponseHeader>) -> Option<String> {
    Some(fields::header_only(h))
}

/// A role's permissions as etcdctl's JSON prints them.
fn role_json(r: &AuthRoleGetResponse) -> String {
    let perms = r
        .perm
        .iter()
        .map(|p| {
            Obj::new()
                .int("permType", p.perm_type)
                .bytes("key", &p.key)
                .bytes("range_end", &p.range_end)
                .build()
        })
        .collect();
    json_of(r.header.as_ref(), |o| o.list("perm", perms))
}

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

pub async fn run_user(
    client: &Client,
    cmd: &UserCommand,
    format: Format,
) -> Result<String, Failure> {
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
            let r = a.user_add(&name, &password, *no_password).await?;
            pick(
                format,
                format!("User {name} created\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        UserCommand::Delete { name } => {
            let r = a.user_delete(name).await?;
            pick(
                format,
                format!("User {name} deleted\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        UserCommand::Get { name, detail } => {
            let r = a.user_get(name).await?;
            let mut out = format!("User: {name}\n");
            if *detail {
                for role in &r.roles {
                    out.push('\n');
                    let role_resp = a.role_get(role).await?;
                    match pick(
                        format,
                        role_text(role, &role_resp),
                        || role_json(&role_resp),
                        Some(fields::role_get(&role_resp)),
                    ) {
                        Ok(text) => out.push_str(&text),
                        Err(f) => {
                            // etcdctl has printed the lines before the role by then.
                            crate::emit(&out)?;
                            return Err(f);
                        }
                    }
                }
            } else if matches!(format, Format::Fields | Format::Table) {
                return Err(unsupported(format));
            } else if format == Format::Json {
                out = json_of(r.header.as_ref(), |o| {
                    o.list("roles", r.roles.iter().map(|x| json::string(x)).collect())
                });
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
        UserCommand::List => {
            let r = a.user_list().await?;
            pick(
                format,
                r.users.iter().map(|u| format!("{u}\n")).collect(),
                || {
                    json_of(r.header.as_ref(), |o| {
                        o.list("users", r.users.iter().map(|x| json::string(x)).collect())
                    })
                },
                None,
            )?
        }
        UserCommand::Passwd { name, interactive } => {
            let password = read_password(name, *interactive)?;
            let r = a.user_change_password(name, &password).await?;
            pick(
                format,
                "Password updated\n".to_string(),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        UserCommand::GrantRole { name, role } => {
            let r = a.user_grant_role(name, role).await?;
            pick(
                format,
                format!("Role {role} is granted to user {name}\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        UserCommand::RevokeRole { name, role } => {
            let r = a.user_revoke_role(name, role).await?;
            pick(
                format,
                format!("Role {role} is revoked from user {name}\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
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

pub async fn run_role(
    client: &Client,
    cmd: &RoleCommand,
    format: Format,
) -> Result<String, Failure> {
    let a = client.auth();
    Ok(match cmd {
        RoleCommand::Add { name } => {
            let r = a.role_add(name).await?;
            pick(
                format,
                format!("Role {name} created\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        RoleCommand::Delete { name } => {
            let r = a.role_delete(name).await?;
            pick(
                format,
                format!("Role {name} deleted\n"),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        RoleCommand::Get { name } => {
            let r = a.role_get(name).await?;
            pick(
                format,
                role_text(name, &r),
                || role_json(&r),
                Some(fields::role_get(&r)),
            )?
        }
        RoleCommand::List => {
            let r = a.role_list().await?;
            pick(
                format,
                r.roles.iter().map(|x| format!("{x}\n")).collect(),
                || {
                    json_of(r.header.as_ref(), |o| {
                        o.list("roles", r.roles.iter().map(|x| json::string(x)).collect())
                    })
                },
                Some(fields::role_list(&r)),
            )?
        }
        RoleCommand::GrantPermission(p) => {
            if p.args.len() < 3 {
                return Err(bad("role grant command requires role name, permission type, and key [endkey] as its argument"));
            }
            let t = perm_type(&p.args[1])?;
            let (key, end) = perm_range(&p.args[2..], p)?;
            let r = a.role_grant_permission(&p.args[0], t, key, end).await?;
            pick(
                format,
                format!("Role {} updated\n", p.args[0]),
                || json_of(r.header.as_ref(), |o| o),
                hdr(r.header.as_ref()),
            )?
        }
        RoleCommand::RevokePermission(p) => {
            if p.args.len() < 2 {
                return Err(bad("role revoke-permission command requires role name and key [endkey] as its argument"));
            }
            let (key, end) = perm_range(&p.args[1..], p)?;
            let r = a
                .role_revoke_permission(&p.args[0], key, end.clone())
                .await?;
            match format {
                Format::Json => return Ok(json_of(r.header.as_ref(), |o| o)),
                Format::Fields => return Ok(fields::header_only(r.header.as_ref())),
                Format::Table => return Err(unsupported(format)),
                Format::Simple => {}
            }
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
