//! The operator's subcommands, over HTTP ([`super::http`]): `ringlock locks [--prefix P]` lists
//! the held locks, a page of `GET /locks` at a time until the last; `ringlock release NAME
//! --force` frees a lock whoever holds it (`POST /release` with `"force": true`), and without
//! `--force` releases it as `--owner`. Both find the server and the secret as every client does
//! (`LOCKSERVER_ADDR`, `LOCKSERVER_SECRET`, `.env`).

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Deserialize;

use super::http::{Answer, Http};
use super::{ClientArgs, EXIT_UNAVAILABLE};

/// Exit status when `release` released nothing (nobody held the lock, another owner or another
/// lease did).
pub const EXIT_NOT_RELEASED: u8 = 1;
/// Locks asked for per page: the most the server gives.
const PAGE: usize = 1000;

/// `ringlock locks`.
#[derive(clap::Args, Debug)]
#[command(after_help = "One line per held lock, sorted by name: its name, holder, fencing token, what is \
left of its lease, and how many acquires wait for it. A name that has spaces, quotes or control \
characters in it, or is empty, is shown as a JSON string.")]
pub struct LocksArgs {
    /// Only locks whose names start with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `ringlock release`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: 0 if the lock was released; 1 if nothing was (nobody held it, \
another owner does, or another lease than --token); 69 if the server could not be reached or \
refused the secret.")]
pub struct ReleaseArgs {
    /// The lock's name.
    pub name: String,
    /// Free the lock whoever holds it (an operator's tool for a lock a crashed worker left
    /// without a lease). A session holder is told it lost the lock; the first waiter gets it.
    #[arg(long)]
    pub force: bool,
    /// Only if it is held under this fencing token (the one `ringlock locks` showed), so that
    /// a lease granted since is left alone.
    #[arg(long)]
    pub token: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A lock as `GET /locks` lists it.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
struct Lock {
    resource: String,
    owner: String,
    token: u64,
    expires_in_ms: Option<u64>,
    waiters: u64,
}

#[derive(Deserialize)]
struct Page {
    locks: Vec<Lock>,
    next: Option<String>,
}

/// Why a command could not finish.
enum Failed {
    /// The server could not be reached, or its answers could not be read.
    Unreachable(std::io::Error),
    /// The server answered with something the command cannot go on from.
    Refused(Answer),
}

impl From<std::io::Error> for Failed {
    fn from(e: std::io::Error) -> Failed {
        Failed::Unreachable(e)
    }
}

fn failed(command: &str, args: &ClientArgs, f: Failed) -> ExitCode {
    match f {
        Failed::Unreachable(e) => {
            eprintln!("ringlock {command}: cannot use the server at {}: {e}", args.addr)
        }
        Failed::Refused(a) if a.status == 401 => eprintln!(
            "ringlock {command}: the server at {} refused the secret (set LOCKSERVER_SECRET)",
            args.addr
        ),
        Failed::Refused(a) => eprintln!("ringlock {command}: the server answered {}: {}", a.status, a.text()),
    }
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// Runs `ringlock locks`.
pub fn locks(args: LocksArgs) -> ExitCode {
    match all_locks(&args) {
        Ok(locks) => {
            print!("{}", table(&locks));
            ExitCode::SUCCESS
        }
        Err(f) => failed("locks", &args.client, f),
    }
}

/// Every held lock whose name starts with the prefix, page after page.
fn all_locks(args: &LocksArgs) -> Result<Vec<Lock>, Failed> {
    let mut http = Http::connect(&args.client.config())?;
    let mut locks = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut target = format!("/locks?limit={PAGE}&prefix={}", query(&args.prefix));
        if let Some(after) = &after {
            let _ = write!(target, "&after={}", query(after));
        }
        let answer = http.get(&target)?;
        if answer.status != 200 {
            return Err(Failed::Refused(answer));
        }
        let page: Page = serde_json::from_slice(&answer.body)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        locks.extend(page.locks);
        match page.next {
            // Names only rise from page to page; a cursor that did not would never end.
            Some(next) if after.as_ref().is_none_or(|a| next > *a) => after = Some(next),
            _ => return Ok(locks),
        }
    }
}

/// `s` as a query string value.
fn query(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The locks as a table with a header, columns aligned.
fn table(locks: &[Lock]) -> String {
    let mut rows = vec![["RESOURCE", "HOLDER", "TOKEN", "LEASE LEFT", "WAITERS"].map(String::from)];
    rows.extend(locks.iter().map(|l| {
        let lease = l.expires_in_ms.map_or("never".to_owned(), |ms| format!("{:.3} s", ms as f64 / 1e3));
        [shown(&l.resource), shown(&l.owner), l.token.to_string(), lease, l.waiters.to_string()]
    }));
    let mut widths = [0; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<w$}  ");
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A name as it can be read on one line of a table: as it is, or as a JSON string if it is
/// empty or has spaces, quotes or control characters in it.
fn shown(name: &str) -> String {
    if !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '"' || c.is_control()) {
        name.to_owned()
    } else {
        serde_json::to_string(name).unwrap_or_default()
    }
}

/// Runs `ringlock release`.
pub fn release(args: ReleaseArgs) -> ExitCode {
    let config = args.client.config();
    let mut body = serde_json::json!({ "resource": args.name });
    if args.force {
        body["force"] = true.into();
    } else {
        body["owner"] = config.owner.clone().into();
    }
    if let Some(token) = args.token {
        body["token"] = token.into();
    }
    let answer = match Http::connect(&config)
        .and_then(|mut http| http.post("/release", body.to_string().as_bytes()))
    {
        Ok(answer) => answer,
        Err(e) => return failed("release", &args.client, Failed::Unreachable(e)),
    };
    let name = shown(&args.name);
    let why = match (answer.status, answer.text().as_str()) {
        (200, _) => {
            match answer.token {
                Some(token) => println!("{name}: released (the lease of token {token})"),
                None => println!("{name}: released"),
            }
            return ExitCode::SUCCESS;
        }
        (409, "ERR Resource not found") => "nobody holds it".to_owned(),
        (409, "ERR Token mismatch") => {
            format!("it is held under another token than {}", args.token.unwrap_or_default())
        }
        (409, "ERR Resource is already locked") => {
            format!("{} does not hold it (--force frees it whoever holds it)", config.owner)
        }
        _ => return failed("release", &args.client, Failed::Refused(answer)),
    };
    eprintln!("ringlock release: {name}: not released: {why}");
    ExitCode::from(EXIT_NOT_RELEASED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(resource: &str, owner: &str, token: u64, expires_in_ms: Option<u64>, waiters: u64) -> Lock {
        Lock { resource: resource.into(), owner: owner.into(), token, expires_in_ms, waiters }
    }

    #[test]
    fn a_table_of_locks() {
        let locks =
            [lock("job/1", "worker-1", 1763822700000000001, Some(29_840), 2), lock("a b", "", 7, None, 0)];
        assert_eq!(
            table(&locks),
            "RESOURCE  HOLDER    TOKEN                LEASE LEFT  WAITERS\n\
             job/1     worker-1  1763822700000000001  29.840 s    2\n\
             \"a b\"     \"\"        7                    never       0\n"
        );
        assert_eq!(table(&[]), "RESOURCE  HOLDER  TOKEN  LEASE LEFT  WAITERS\n");
    }

    #[test]
    fn names_that_would_break_a_line_are_quoted() {
        assert_eq!(shown("s3://bucket/kéy"), "s3://bucket/kéy");
        assert_eq!(shown("two\nlines"), "\"two\\nlines\"");
        assert_eq!(shown("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(query("job/ a&b"), "job%2F+a%26b");
    }
}
