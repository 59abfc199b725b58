//! Dot-commands (`.tables`, `.mode csv`, `.transfer 2`…) and their psql backslash aliases
//! (`\dt`, `\d t`, `\q`, `\timing`, `\i`): parsing only. Running them is the shell's job.

use std::path::PathBuf;

use super::format::Mode;

/// The consistency levels a session can ask for (`SET consistency = …`).
pub const LEVELS: [&str; 3] = ["linearizable", "lease", "stale"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DotCommand {
    Help,
    Quit,
    Mode(Mode),
    /// `.mode` alone: print the current mode.
    ShowMode,
    Timer(bool),
    Consistency(String),
    /// `.consistency` alone: print the current level.
    ShowConsistency,
    Tables,
    Schema(Option<String>),
    Nodes,
    Leader,
    Transfer(u64),
    Join(u64, String),
    Remove(u64),
    Snapshot,
    Read(PathBuf),
}

/// The `.help` text.
pub const HELP: &str = "\
SQL statements end with `;` and may span lines. Dot-commands (one line each):
  .help                      this text
  .quit | .exit              leave (or Ctrl-D)
  .mode [table|csv|json|line] show or set the output format
  .timer on|off              print the time each statement takes
  .consistency [linearizable|lease|stale]
                             show or set the read consistency of this session
  .tables                    list the tables
  .schema [TABLE]            show CREATE TABLE for one or every table
  .nodes                     the cluster members: role, term, applied index, leader
  .leader                    which node leads
  .transfer ID               move the leadership to node ID
  .join ID ADDR              add node ID (listening on ADDR) as a voter
  .remove ID                 remove node ID from the cluster
  .snapshot                  make the connected node take a snapshot now
  .read FILE                 run the statements and commands in FILE
psql aliases: \\q \\dt \\d [TABLE] \\timing [on|off] \\i FILE \\?
";

fn on_off(arg: Option<&str>, current: Option<bool>) -> Result<bool, String> {
    match arg.map(str::to_ascii_lowercase).as_deref() {
        Some("on" | "true" | "1") => Ok(true),
        Some("off" | "false" | "0") => Ok(false),
        None => current.map(|c| !c).ok_or_else(|| "expected on or off".to_string()),
        Some(other) => Err(format!("expected on or off, not {other:?}")),
    }
}

fn node_id(arg: Option<&str>, usage: &str) -> Result<u64, String> {
    let a = arg.ok_or_else(|| format!("usage: {usage}"))?;
    a.parse::<u64>().ok().filter(|&id| id > 0).ok_or_else(|| format!("{a:?} is not a node id (usage: {usage})"))
}

/// Parses one command line. `timer` is the current timer setting (a bare `\timing` toggles it).
pub fn parse(line: &str, timer: bool) -> Result<DotCommand, String> {
    let line = line.trim().trim_end_matches(';').trim_end();
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let arg = args.first().copied();
    let expect_args = |max: usize| {
        if args.len() > max {
            Err(format!("{name} takes {} argument{}: {line:?}", max, if max == 1 { "" } else { "s" }))
        } else {
            Ok(())
        }
    };
    let cmd = match name {
        ".help" | "\\?" | ".h" => DotCommand::Help,
        ".quit" | ".exit" | ".q" | "\\q" => DotCommand::Quit,
        ".mode" => match arg {
            None => DotCommand::ShowMode,
            Some(m) => DotCommand::Mode(
                Mode::parse(m).ok_or_else(|| format!("unknown mode {m:?}: expected table, csv, json or line"))?,
            ),
        },
        ".timer" => DotCommand::Timer(on_off(arg, None)?),
        "\\timing" => DotCommand::Timer(on_off(arg, Some(timer))?),
        ".consistency" => match arg {
            None => DotCommand::ShowConsistency,
            Some(l) => {
                let l = l.to_ascii_lowercase();
                if !LEVELS.contains(&l.as_str()) {
                    return Err(format!("unknown consistency {l:?}: expected linearizable, lease or stale"));
                }
                DotCommand::Consistency(l)
            }
        },
        ".tables" | "\\dt" => DotCommand::Tables,
        "\\d" if arg.is_none() => DotCommand::Tables,
        ".schema" | "\\d" => DotCommand::Schema(arg.map(str::to_string)),
        ".nodes" => DotCommand::Nodes,
        ".leader" => DotCommand::Leader,
        ".transfer" => DotCommand::Transfer(node_id(arg, ".transfer ID")?),
        ".join" => {
            let id = node_id(arg, ".join ID ADDR")?;
            let addr = args.get(1).ok_or("usage: .join ID ADDR")?;
            expect_args(2)?;
            DotCommand::Join(id, addr.to_string())
        }
        ".remove" => DotCommand::Remove(node_id(arg, ".remove ID")?),
        ".snapshot" => DotCommand::Snapshot,
        ".read" | "\\i" => {
            // The file name is the rest of the line, so it may contain spaces.
            let path = line[name.len()..].trim();
            if path.is_empty() {
                return Err(format!("usage: {name} FILE"));
            }
            return Ok(DotCommand::Read(PathBuf::from(path)));
        }
        other => return Err(format!("unknown command {other:?}; .help lists the commands")),
    };
    let max = match &cmd {
        DotCommand::Join(..) => 2,
        DotCommand::Mode(_)
        | DotCommand::Timer(_)
        | DotCommand::Consistency(_)
        | DotCommand::Schema(_)
        | DotCommand::Transfer(_)
        | DotCommand::Remove(_) => 1,
        _ => 0,
    };
    expect_args(max)?;
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let ok = |l: &str| parse(l, false).unwrap();
        assert_eq!(ok(".help"), DotCommand::Help);
        assert_eq!(ok("\\?"), DotCommand::Help);
        assert_eq!(ok(".quit"), DotCommand::Quit);
        assert_eq!(ok(".exit"), DotCommand::Quit);
        assert_eq!(ok("\\q"), DotCommand::Quit);
        assert_eq!(ok(".mode csv"), DotCommand::Mode(Mode::Csv));
        assert_eq!(ok(".mode"), DotCommand::ShowMode);
        assert_eq!(ok(".timer on"), DotCommand::Timer(true));
        assert_eq!(ok(".timer OFF"), DotCommand::Timer(false));
        assert_eq!(ok(".consistency Stale"), DotCommand::Consistency("stale".into()));
        assert_eq!(ok(".consistency"), DotCommand::ShowConsistency);
        assert_eq!(ok(".tables"), DotCommand::Tables);
        assert_eq!(ok("\\dt"), DotCommand::Tables);
        assert_eq!(ok("\\d"), DotCommand::Tables);
        assert_eq!(ok(".schema"), DotCommand::Schema(None));
        assert_eq!(ok(".schema users"), DotCommand::Schema(Some("users".into())));
        assert_eq!(ok("\\d users"), DotCommand::Schema(Some("users".into())));
        assert_eq!(ok(".nodes"), DotCommand::Nodes);
        assert_eq!(ok(".leader"), DotCommand::Leader);
        assert_eq!(ok(".transfer 2"), DotCommand::Transfer(2));
        assert_eq!(ok(".join 4 127.0.0.1:7004"), DotCommand::Join(4, "127.0.0.1:7004".into()));
        assert_eq!(ok(".remove 3"), DotCommand::Remove(3));
        assert_eq!(ok(".snapshot"), DotCommand::Snapshot);
        assert_eq!(ok(".read my file.sql"), DotCommand::Read("my file.sql".into()));
        assert_eq!(ok("\\i x.sql"), DotCommand::Read("x.sql".into()));
        // A trailing semicolon out of habit is accepted.
        assert_eq!(ok(".tables;"), DotCommand::Tables);
    }

    #[test]
    fn timing_toggles_like_psql() {
        assert_eq!(parse("\\timing", false), Ok(DotCommand::Timer(true)));
        assert_eq!(parse("\\timing", true), Ok(DotCommand::Timer(false)));
        assert!(parse(".timer", true).is_err());
    }

    #[test]
    fn bad_commands_say_why() {
        let err = |l: &str| parse(l, false).unwrap_err();
        assert!(err(".frobnicate").contains("unknown command"));
        assert!(err(".mode xml").contains("unknown mode"));
        assert!(err(".timer maybe").contains("on or off"));
        assert!(err(".consistency strong").contains("unknown consistency"));
        assert!(err(".transfer").contains("usage: .transfer ID"));
        assert!(err(".transfer two").contains("not a node id"));
        assert!(err(".transfer 0").contains("not a node id"));
        assert!(err(".join 4").contains("usage: .join ID ADDR"));
        assert!(err(".join 4 a b").contains("takes 2 arguments"));
        assert!(err(".tables extra").contains("takes 0 arguments"));
        assert!(err(".read").contains("usage"));
        assert!(err(".remove -1").contains("not a node id"));
    }
}
