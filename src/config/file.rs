//! The config file (`--config FILE`, `RINGLOCK_CONFIG`): TOML whose keys are the server's long
//! flag names (`port = 9000`, `bind = "127.0.0.1"`, `max-connections = 5000`). Its values
//! become the flags' defaults, so that the command line, the environment and `.env` (already
//! in the environment) all beat the file, and the file beats the built-in defaults. The keys
//! are read off the command's own flags, so a flag added to [`super::ServerArgs`] is a key
//! without more code; each value is checked by that flag's own parser before the start.
//!
//! The secret is not a flag, so it has no key: the file, an ordinary conffile, never holds
//! it (use `LOCKSERVER_SECRET_FILE`).

use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::{ArgAction, Command};

/// The id of the flag that names the config file.
pub const CONFIG_ID: &str = "config";

/// Why the command line could not be had.
#[derive(Debug)]
pub enum Error {
    /// The command line itself (or `--help`, `--version`): clap prints and exits.
    Cli(clap::Error),
    /// The config file, with its name and the key at fault.
    File(String),
}

/// Parses `argv` into `P`, with the settings of the config file it names (`--config`, or its
/// environment variable) as defaults. The file is read only when no subcommand runs: the
/// client subcommands take their settings elsewhere.
pub fn parse<P: clap::Parser>(argv: Vec<OsString>) -> Result<P, Error> {
    let command = P::command();
    let matches = command.clone().try_get_matches_from(&argv).map_err(Error::Cli)?;
    let path = match matches.subcommand() {
        None => matches.try_get_one::<std::path::PathBuf>(CONFIG_ID).ok().flatten(),
        Some(_) => None,
    };
    let matches = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::File(format!("{}: cannot read: {e}", path.display())))?;
            let command = with_file(command, path, &text).map_err(Error::File)?;
            command.try_get_matches_from(&argv).map_err(Error::Cli)?
        }
        None => matches,
    };
    P::from_arg_matches(&matches).map_err(Error::Cli)
}

/// `command` with the settings of a config file (`text`, read from `path`) as its defaults.
pub fn with_file(command: Command, path: &Path, text: &str) -> Result<Command, String> {
    let file = path.display();
    let table: toml::Table = text.parse().map_err(|e| format!("{file}: {e}"))?;
    let mut built = command.clone();
    built.build();
    // A copy that reads no environment, to check one file value at a time on its own.
    let checker = built.clone().mut_args(|a| a.env(None));
    let mut command = command;
    for (key, value) in &table {
        let Some(arg) = built.get_arguments().find(|a| a.get_long() == Some(key) && is_setting(a)) else {
            let hint = key.contains('_').then(|| format!(" (did you mean `{}`?)", key.replace('_', "-")));
            return Err(format!(
                "{file}: unknown key `{key}`{}; the keys are the long flag names of `ringlock --help`",
                hint.unwrap_or_default()
            ));
        };
        let wrong = |what: &str| format!("{file}: key `{key}`: {what}");
        let values: Vec<String> = match (arg.get_action(), value) {
            (ArgAction::SetTrue | ArgAction::SetFalse, toml::Value::Boolean(b)) => vec![b.to_string()],
            (ArgAction::SetTrue | ArgAction::SetFalse, _) => {
                return Err(wrong(&format!("expected true or false, found {}", value.type_str())));
            }
            (ArgAction::Append, toml::Value::Array(items)) => items
                .iter()
                .map(scalar)
                .collect::<Option<_>>()
                .ok_or_else(|| wrong("expected an array of strings, numbers or booleans"))?,
            (_, value) => vec![scalar(value).ok_or_else(|| {
                wrong(&format!("expected a string, number or boolean, found {}", value.type_str()))
            })?],
        };
        if matches!(arg.get_action(), ArgAction::Set | ArgAction::Append) {
            let mut argv = vec![OsString::from("ringlock")];
            argv.extend(values.iter().map(|v| OsString::from(format!("--{key}={v}"))));
            if let Err(e) = checker.clone().try_get_matches_from(argv) {
                // Only what is wrong with the value itself: how flags go together (one
                // requiring another, say) is checked with every setting in place.
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
                ) {
                    let why = e.to_string();
                    let why = why.lines().next().unwrap_or_default();
                    return Err(wrong(why.strip_prefix("error: ").unwrap_or(why)));
                }
            }
        }
        command = command.mut_arg(arg.get_id().clone(), |a| a.default_values(values));
    }
    Ok(command)
}

/// Whether a flag is a setting a file may hold (not `--help`, `--version` or `--config`).
fn is_setting(arg: &clap::Arg) -> bool {
    arg.get_id() != CONFIG_ID
        && matches!(
            arg.get_action(),
            ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
        )
}

/// A TOML scalar as the text a flag would be given.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgMatches};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new(CONFIG_ID).long("config"))
            .arg(
                Arg::new("port")
                    .long("port")
                    .short('p')
                    .default_value("8080")
                    .value_parser(clap::value_parser!(u16)),
            )
            .arg(
                Arg::new("bind")
                    .long("bind")
                    .default_value("0.0.0.0")
                    .value_parser(clap::value_parser!(std::net::IpAddr)),
            )
            .arg(Arg::new("in_memory").long("in-memory").action(ArgAction::SetTrue))
            .arg(Arg::new("peer").long("peer").action(ArgAction::Append))
    }

    fn parse(text: &str, argv: &[&str]) -> Result<ArgMatches, String> {
        let command = with_file(command(), Path::new("/etc/r.toml"), text)?;
        Ok(command.try_get_matches_from(std::iter::once("t").chain(argv.iter().copied())).unwrap())
    }

    #[test]
    fn file_values_are_defaults() {
        let m =
            parse("port = 9000\nbind = \"127.0.0.1\"\nin-memory = true\npeer = [\"a\", \"b\"]", &[]).unwrap();
        assert_eq!(m.get_one::<u16>("port"), Some(&9000));
        assert_eq!(m.get_one::<std::net::IpAddr>("bind").unwrap().to_string(), "127.0.0.1");
        assert!(m.get_flag("in_memory"));
        assert_eq!(m.get_many::<String>("peer").unwrap().collect::<Vec<_>>(), ["a", "b"]);
        let m = parse("port = 9000", &["-p", "7"]).unwrap();
        assert_eq!(m.get_one::<u16>("port"), Some(&7), "the command line wins");
        let m = parse("", &[]).unwrap();
        assert_eq!(m.get_one::<u16>("port"), Some(&8080));
        assert!(!m.get_flag("in_memory"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        assert_eq!(
            parse("prot = 1", &[]).unwrap_err(),
            "/etc/r.toml: unknown key `prot`; the keys are the long flag names of `ringlock --help`"
        );
        assert_eq!(
            parse("in_memory = true", &[]).unwrap_err(),
            "/etc/r.toml: unknown key `in_memory` (did you mean `in-memory`?); the keys are the long flag \
             names of `ringlock --help`"
        );
        assert!(parse("config = \"x\"", &[]).unwrap_err().contains("unknown key `config`"));
        assert_eq!(
            parse("port = \"http\"", &[]).unwrap_err(),
            "/etc/r.toml: key `port`: invalid value 'http' for '--port <port>': invalid digit found in string"
        );
        assert!(
            parse("port = 70000", &[])
                .unwrap_err()
                .starts_with("/etc/r.toml: key `port`: invalid value '70000'")
        );
        assert_eq!(
            parse("port = [1]", &[]).unwrap_err(),
            "/etc/r.toml: key `port`: expected a string, number or boolean, found array"
        );
        assert_eq!(
            parse("in-memory = \"yes\"", &[]).unwrap_err(),
            "/etc/r.toml: key `in-memory`: expected true or false, found string"
        );
        assert!(parse("port = ", &[]).unwrap_err().starts_with("/etc/r.toml: TOML parse error at line 1"));
    }
}
