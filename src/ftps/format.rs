//! How entries look on the wire: LIST (`ls -l`, which FileZilla, WinSCP and
//! Cyberduck parse), NLST, MLSD/MLST facts (RFC 3659), MDTM times, and the
//! PASV/EPSV replies, and the one mapping from tree errors to reply codes.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};

use tracing::warn;

use crate::vfs::{ls_line, Entry, Kind, Perms, VfsError};

/// The one mapping from tree errors to FTP replies. Storage details (keys,
/// bucket) never reach the client.
pub fn vfs_reply(e: &VfsError) -> (u16, String) {
    match e {
        VfsError::NotFound(p) => (550, format!("No such file or folder: {p}")),
        VfsError::NotADirectory(p) => (550, format!("Not a folder: {p}")),
        VfsError::IsADirectory(p) => (550, format!("Is a folder: {p}")),
        VfsError::PermissionDenied(why) => (550, format!("Permission denied: {why}")),
        VfsError::ReadOnly => (550, e.to_string()),
        VfsError::InvalidPath(why) => (553, format!("Invalid path: {why}")),
        VfsError::Storage(f) if f.is_missing() => (550, "No such file or folder".into()),
        VfsError::Storage(inner) => {
            warn!(error = %inner, "storage error");
            (451, "Storage is unavailable: try again later".into())
        }
        VfsError::Producer(why) => (451, format!("Cannot produce this file: {why}")),
    }
}

/// `YYYYMMDDHHMMSS` in UTC, as MDTM and the `modify` fact use.
pub fn ftp_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

/// The MLSx facts of one entry, ending with a space before the name.
/// `session_folder` marks folders a user holding `delete` may remove.
pub fn facts(e: &Entry, perms: Perms, session_folder: bool) -> String {
    match e.kind {
        Kind::Dir => {
            let mut perm = String::from("el");
            if perms.delete && session_folder {
                perm.push('d');
            }
            format!("type=dir;modify={};perm={perm}; ", ftp_time(e.mtime))
        }
        Kind::File => format!(
            "type=file;size={};modify={};perm={}; ",
            e.size,
            ftp_time(e.mtime),
            if perms.download { "r" } else { "" }
        ),
    }
}

/// One MLSD line.
pub fn mlsd_line(e: &Entry, perms: Perms, session_folder: bool) -> String {
    format!("{}{}\r\n", facts(e, perms, session_folder), e.name)
}

/// One LIST line.
pub fn list_line(e: &Entry, now: DateTime<Utc>) -> String {
    format!("{}\r\n", ls_line(e, now))
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` text.
pub fn pasv_text(ip: Ipv4Addr, port: u16) -> String {
    let o = ip.octets();
    format!(
        "Entering Passive Mode ({},{},{},{},{},{})",
        o[0],
        o[1],
        o[2],
        o[3],
        port >> 8,
        port & 0xff
    )
}

/// `229 Entering Extended Passive Mode (|||port|)` text.
pub fn epsv_text(port: u16) -> String {
    format!("Entering Extended Passive Mode (|||{port}|)")
}

/// The path argument of LIST/NLST/STAT, without `ls`-style options such as
/// `-la` that many clients send.
pub fn strip_list_options(arg: &str) -> &str {
    let mut rest = arg.trim();
    while rest.starts_with('-') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r).trim_start();
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(kind: Kind) -> Entry {
        Entry {
            name: "c1.tar.gz".into(),
            kind,
            size: 1234,
            mtime: Utc.with_ymd_and_hms(2026, 11, 23, 9, 4, 5).unwrap(),
        }
    }

    #[test]
    fn facts_and_times() {
        let p = Perms {
            list: true,
            download: true,
            delete: false,
        };
        assert_eq!(
            mlsd_line(&entry(Kind::File), p, false),
            "type=file;size=1234;modify=20261123090405;perm=r; c1.tar.gz\r\n"
        );
        let d = Perms { delete: true, ..p };
        assert_eq!(
            facts(&entry(Kind::Dir), d, true),
            "type=dir;modify=20261123090405;perm=eld; "
        );
        assert_eq!(
            facts(&entry(Kind::Dir), d, false),
            "type=dir;modify=20261123090405;perm=el; "
        );
    }

    #[test]
    fn passive_replies() {
        assert_eq!(
            pasv_text(Ipv4Addr::new(203, 0, 113, 10), 50001),
            "Entering Passive Mode (203,0,113,10,195,81)"
        );
        assert_eq!(
            epsv_text(50001),
            "Entering Extended Passive Mode (|||50001|)"
        );
    }

    #[test]
    fn list_options_are_stripped() {
        assert_eq!(strip_list_options("-la"), "");
        assert_eq!(strip_list_options("-a -l /2026/11"), "/2026/11");
        assert_eq!(strip_list_options("/2026"), "/2026");
    }
}
