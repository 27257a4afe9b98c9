//! `ringlock cluster`: the operator's view of a cluster and its membership changes, over HTTP
//! ([`super::http`]): `status` shows `GET /cluster` of the member asked, `add ID=HOST:PORT`
//! and `remove ID` ask for a membership change (`POST /cluster/members`,
//! `DELETE /cluster/members/ID`; a follower passes them to the leader). The member is found as
//! every client finds its server (`LOCKSERVER_ADDR`, `LOCKSERVER_SECRET`, `.env`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use super::http::{Answer, Http};
use super::{ClientArgs, EXIT_UNAVAILABLE};

/// Exit status when the cluster refused a change (another change is under way, or the member
/// to add did not answer or catch up).
pub const EXIT_REFUSED: u8 = 1;
/// How long a change may take: a new member catches up with the log before it votes (the
/// server gives it a minute), and joint consensus commits twice.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

/// `ringlock cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCmd,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What `ringlock cluster` does.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCmd {
    /// Show the members, their roles, the leader, the term and how far each is behind.
    Status,
    /// Add a member (started with --join and its id, or one that lost its data), by its
    /// consensus address: it catches up with the log, then votes.
    Add {
        /// The new member: its id (its --node-id) and its consensus address, as in --peers.
        #[arg(value_name = "ID=HOST:PORT", value_parser = crate::config::peer_arg)]
        member: (u64, String),
    },
    /// Remove a member: the others stop counting it.
    Remove {
        /// The member's id.
        id: u64,
    },
}

/// `GET /cluster`.
#[derive(Deserialize, Debug)]
struct Status {
    node_id: u64,
    leader_id: Option<u64>,
    term: u64,
    commit_index: u64,
    members: Vec<Member>,
}

#[derive(Deserialize, Debug)]
struct Member {
    id: u64,
    raft_addr: String,
    api_addr: String,
    role: String,
    behind: Option<u64>,
}

/// Runs `ringlock cluster`.
pub fn run(args: ClusterArgs) -> ExitCode {
    let mut config = args.client.config();
    if !matches!(args.command, ClusterCmd::Status) {
        config.call_timeout = config.call_timeout.max(CHANGE_TIMEOUT);
    }
    let answer = Http::connect(&config).and_then(|mut http| match &args.command {
        ClusterCmd::Status => http.get("/cluster"),
        ClusterCmd::Add { member: (id, addr) } => {
            let body = serde_json::json!({ "id": id, "addr": addr }).to_string();
            http.post("/cluster/members", body.as_bytes())
        }
        ClusterCmd::Remove { id } => http.delete(&format!("/cluster/members/{id}")),
    });
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("ringlock cluster: cannot use the server at {}: {e}", args.client.addr);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match (&args.command, answer.status) {
        (ClusterCmd::Status, 200) => match serde_json::from_slice::<Status>(&answer.body) {
            Ok(status) => {
                print!("{}", table(&status));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringlock cluster: the server's answer is not a cluster's status: {e}");
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        },
        (ClusterCmd::Add { member: (id, _) }, 200) => {
            println!("member {id} added");
            ExitCode::SUCCESS
        }
        (ClusterCmd::Remove { id }, 200) => {
            println!("member {id} removed");
            ExitCode::SUCCESS
        }
        (_, 409) => refused(&answer, EXIT_REFUSED),
        (_, 401) => {
            eprintln!(
                "ringlock cluster: the server at {} refused the secret (set LOCKSERVER_SECRET)",
                args.client.addr
            );
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        _ => refused(&answer, EXIT_UNAVAILABLE),
    }
}

fn refused(answer: &Answer, code: u8) -> ExitCode {
    eprintln!("ringlock cluster: the server answered {}: {}", answer.status, answer.text());
    ExitCode::from(code)
}

/// The status as an operator reads it: a line about the cluster, then a line per member.
fn table(s: &Status) -> String {
    let mut out = String::new();
    let leader =
        s.leader_id.map_or_else(|| "none (an election is under way)".to_owned(), |id| id.to_string());
    let _ = writeln!(
        out,
        "member {} sees: leader {leader}, term {}, committed {}",
        s.node_id, s.term, s.commit_index
    );
    let rows: Vec<[String; 5]> = s
        .members
        .iter()
        .map(|m| {
            let behind = m.behind.map_or_else(|| "-".to_owned(), |b| b.to_string());
            [m.id.to_string(), m.role.clone(), m.raft_addr.clone(), m.api_addr.clone(), behind]
        })
        .collect();
    let header = ["ID", "ROLE", "CONSENSUS", "CLIENTS", "BEHIND"].map(String::from);
    let widths: Vec<usize> =
        (0..5).map(|c| rows.iter().chain([&header]).map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table() {
        let s: Status = serde_json::from_str(
            r#"{"node_id":2,"leader_id":1,"term":3,"commit_index":41,"members":[
            {"id":1,"raft_addr":"10.0.0.1:7001","api_addr":"10.0.0.1:8080","role":"leader","behind":0},
            {"id":2,"raft_addr":"10.0.0.2:7001","api_addr":"10.0.0.2:8080","role":"follower","behind":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            table(&s),
            "member 2 sees: leader 1, term 3, committed 41\n\
             ID  ROLE      CONSENSUS      CLIENTS        BEHIND\n\
             1   leader    10.0.0.1:7001  10.0.0.1:8080  0\n\
             2   follower  10.0.0.2:7001  10.0.0.2:8080  -\n"
        );
        let electing = Status { leader_id: None, members: Vec::new(), ..s };
        assert!(
            table(&electing).starts_with("member 2 sees: leader none (an election is under way), term 3")
        );
    }
}
