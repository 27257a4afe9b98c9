//! Logging: one event per line on standard error, at or above the level set at start-up
//! (`--log`), as text (`<UTC time> <LEVEL> <message> key=value...`) or, with `--log-format
//! json`, as one JSON object a line: `{"time":..,"level":..,"message":..,"fields":{..}}`. Log
//! lines never carry a secret or a resource or owner name: those belong to the clients.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// How much to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// How a line reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<UTC time> <LEVEL> <message> key=value...`, for people.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);

/// Sets the level for the whole process.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Sets the format for the whole process.
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// Whether messages at `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// A field's value: a number, a flag or text (never a name a client chose).
#[derive(Clone, Copy)]
pub enum Value<'a> {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    /// Anything else that displays itself (an address, say), written as a string.
    Shown(&'a dyn fmt::Display),
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),*) => {
        $(impl From<$t> for Value<'_> {
            fn from(v: $t) -> Self {
                Value::$variant(v.into())
            }
        })*
    };
}
value_from!(u64 => U64, u32 => U64, u16 => U64, u8 => U64, i64 => I64, i32 => I64, f64 => F64, bool => Bool);

impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::U64(v as u64)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Str(v)
    }
}

impl<'a> From<&'a std::net::SocketAddr> for Value<'a> {
    fn from(v: &'a std::net::SocketAddr) -> Self {
        Value::Shown(v)
    }
}

/// A field of a log line: its key and value.
pub type Field<'a> = (&'static str, Value<'a>);

/// Writes one line (use [`crate::log!`]).
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    write_fields(level, args, &[]);
}

/// Writes one line with fields (use [`crate::log!`]).
pub fn write_fields(level: Level, args: fmt::Arguments<'_>, fields: &[Field<'_>]) {
    let format =
        if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 { Format::Json } else { Format::Text };
    let mut line = line(format, SystemTime::now(), level, args, fields);
    line.push('\n');
    // One write per line, so that lines from several cores never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One line, without its line break.
fn line(
    format: Format,
    at: SystemTime,
    level: Level,
    args: fmt::Arguments<'_>,
    fields: &[Field<'_>],
) -> String {
    let mut out = String::with_capacity(128);
    match format {
        Format::Text => {
            let _ = write!(out, "{} {} {args}", utc(at), level.name());
            for (key, value) in fields {
                let _ = write!(out, " {key}=");
                match value {
                    Value::Str(s) => text_value(&mut out, s),
                    Value::Shown(d) => text_value(&mut out, &d.to_string()),
                    other => json_value(&mut out, other),
                }
            }
        }
        Format::Json => {
            out.push_str("{\"time\":\"");
            out.push_str(&utc(at));
            out.push_str("\",\"level\":\"");
            out.push_str(&level.name().to_ascii_lowercase());
            out.push_str("\",\"message\":");
            json_string(&mut out, &args.to_string());
            out.push_str(",\"fields\":{");
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&mut out, key);
                out.push(':');
                json_value(&mut out, value);
            }
            out.push_str("}}");
        }
    }
    out
}

/// A text field's value: as is when it is one word, quoted otherwise.
fn text_value(out: &mut String, s: &str) {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) {
        out.push_str(s);
    } else {
        json_string(out, s);
    }
}

fn json_value(out: &mut String, value: &Value<'_>) {
    let _ = match value {
        Value::U64(n) => write!(out, "{n}"),
        Value::I64(n) => write!(out, "{n}"),
        // JSON has no NaN or infinity.
        Value::F64(x) if x.is_finite() => write!(out, "{x}"),
        Value::F64(_) => write!(out, "null"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Str(s) => {
            json_string(out, s);
            Ok(())
        }
        Value::Shown(d) => {
            json_string(out, &d.to_string());
            Ok(())
        }
    };
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Logs at a level: `log!(Level::Warn, "accept failed: {e}")`, or with fields, which the
/// JSON format gives as an object: `log!(Level::Info, [core = id, open = n], "core {id} done")`.
#[macro_export]
macro_rules! log {
    ($level:expr, [$($key:ident = $value:expr),* $(,)?], $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write_fields(
                $level,
                format_args!($($arg)*),
                &[$((stringify!($key), $crate::log::Value::from($value))),*],
            );
        }
    };
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}

/// `2026-11-22T15:05:00.123Z`.
fn utc(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_times() {
        let at = |secs: u64, ms: u64| utc(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_359_900, 123), "2026-11-22T15:05:00.123Z");
    }

    #[test]
    fn levels_filter() {
        set_level(Level::Warn);
        assert!(enabled(Level::Error) && enabled(Level::Warn) && !enabled(Level::Info));
        set_level(Level::Info);
    }

    #[test]
    fn text_and_json_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_359_900_123);
        let addr: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
        let fields: [Field<'_>; 5] = [
            ("core", 3usize.into()),
            ("ratio", 0.5.into()),
            ("ok", true.into()),
            ("why", "two words".into()),
            ("addr", (&addr).into()),
        ];
        let n = 3;
        assert_eq!(
            line(Format::Text, at, Level::Warn, format_args!("core {n}: \"slow\""), &fields),
            "2026-11-22T15:05:00.123Z WARN core 3: \"slow\" core=3 ratio=0.5 ok=true why=\"two words\" \
             addr=127.0.0.1:80"
        );
        assert_eq!(
            line(Format::Json, at, Level::Warn, format_args!("core {n}: \"slow\"\n"), &fields),
            r#"{"time":"2026-11-22T15:05:00.123Z","level":"warn","message":"core 3: \"slow\"\n","fields":{"core":3,"ratio":0.5,"ok":true,"why":"two words","addr":"127.0.0.1:80"}}"#
        );
        assert_eq!(
            line(Format::Json, at, Level::Info, format_args!("\u{1}"), &[("x", f64::NAN.into())]),
            r#"{"time":"2026-11-22T15:05:00.123Z","level":"info","message":"\u0001","fields":{"x":null}}"#
        );
    }
}
