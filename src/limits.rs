//! Every limit recvault enforces, with safe defaults, in one place.
//!
//! Each field is documented in `config/recvault.example.toml` under `[limits]`.

use std::time::Duration;

use serde::Deserialize;

/// Most x264 encoders one MP4 render may run (`render_threads`).
pub const MAX_RENDER_THREADS: u32 = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections per protocol listener (authenticated or not).
    pub max_connections: usize,
    /// Connections that have not authenticated yet, per listener.
    pub max_unauthenticated: usize,
    /// Of those, connections from one address (an IPv6 /64) at once.
    pub max_unauthenticated_per_source: usize,
    /// Seconds a connection may take to authenticate before it is closed.
    pub login_grace_secs: u64,
    /// Authentication attempts allowed on one SSH connection.
    pub max_auth_attempts: usize,
    /// Milliseconds every rejected SSH authentication takes (hides which check failed).
    pub auth_reject_ms: u64,
    /// Seconds without traffic before an SSH connection is closed.
    pub idle_timeout_secs: u64,
    /// Largest SFTP packet accepted from a client, in bytes; larger ones close the channel.
    pub sftp_max_packet: u32,
    /// Largest SFTP read served in one reply (advertised through limits@openssh.com).
    pub sftp_max_read: u32,
    /// Open file and directory handles per SFTP session.
    pub sftp_max_handles: usize,
    /// SFTP requests processed concurrently per session.
    pub sftp_max_inflight: usize,
    /// Bytes of SFTP replies queued for one channel before the requests
    /// producing more wait (a slow reader holds no more than this, plus
    /// what its SSH window lets through).
    pub sftp_queued_reply_bytes: usize,
    /// Bytes read ahead from storage per open file handle.
    pub read_ahead_bytes: usize,
    /// Bytes read ahead for one connection, all its channels and files together.
    pub read_ahead_connection_bytes: usize,
    /// Bytes read ahead for every connection together.
    pub read_ahead_total_bytes: usize,
    /// Size of one ranged GET when a sequential read fetches ahead with
    /// several (storage serves one stream slower than the client reads).
    pub range_read_bytes: usize,
    /// Ranged GETs one download keeps in flight at most (1: one stream,
    /// never ranged reads).
    pub range_reads_per_file: usize,
    /// Ranged GETs in flight for the whole server.
    pub range_reads_total: usize,
    /// SSH channels per connection.
    pub ssh_max_channels: usize,
    /// Longest FTP command line in bytes; a longer one closes the connection.
    pub ftp_max_line: usize,
    /// Seconds an FTP client has to open the data connection after PASV/EPSV.
    pub ftp_data_connect_secs: u64,
    /// Seconds an FTP client may take no data (on a data connection, or
    /// replies on the control connection) before the transfer or the
    /// connection is closed.
    pub ftp_stall_secs: u64,
    /// Entries a `STAT <folder>` reply lists at most (it is held in memory
    /// and sent on the control connection; LIST and MLSD stream any size).
    pub ftp_stat_max_entries: usize,
    /// Failed logins from one IP address before it is banned.
    pub ban_after_failures: u32,
    /// First ban length in seconds; each further ban of the same address doubles it.
    pub ban_secs: u64,
    /// Longest ban in seconds.
    pub ban_max_secs: u64,
    /// Addresses the brute-force defender remembers (oldest forgotten first).
    pub defender_table_size: usize,
    /// Seconds a loaded session index or directory time is cached.
    pub metadata_cache_secs: u64,
    /// Session indexes kept in the cache.
    pub metadata_cache_entries: usize,
    /// Milliseconds a day's listing (a folder of sessions, an API search)
    /// is answered again from what this node last read, without asking
    /// storage; this node's own writes show at once, another node's within
    /// this long. 0: every listing asks storage.
    pub listing_fresh_ms: u64,
    /// Largest file one ingest upload may hold, in bytes.
    pub ingest_max_file_bytes: u64,
    /// Largest session (all its files), in bytes.
    pub ingest_max_session_bytes: u64,
    /// Ingest uploads streamed at once; more get 503 and retry.
    pub ingest_max_concurrent_uploads: usize,
    /// Seconds an ingest client may send nothing (headers or body) before it is dropped.
    pub ingest_idle_timeout_secs: u64,
    /// Free bytes the spool's disk must keep; uploads get 507 below it.
    pub ingest_min_free_bytes: u64,
    /// Sessions archived at once.
    pub archive_concurrency: usize,
    /// Archiving attempts of one session that may fail for a reason a retry
    /// cannot mend (a panic) before it is quarantined; storage errors are
    /// retried without limit.
    pub archive_max_failures: u32,
    /// Sessions a job over every session (`recvault verify`, …) works on at once.
    pub job_concurrency: usize,
    /// Derived-media renders (ffmpeg) run at once; more wait in a queue.
    pub render_concurrency: usize,
    /// x264 encoders one MP4 render runs in parallel (1 to 16); 0: the
    /// cores divided by `render_concurrency`. Recorded in each session's
    /// index when it is archived, and every render of the session uses the
    /// recorded count (its bytes depend on it).
    pub render_threads: u32,
    /// Seconds a render may run before it is stopped (and the read fails).
    pub render_timeout_secs: u64,
    /// Resident memory (MiB) one ffmpeg process may use before it is stopped.
    pub render_memory_mib: u64,
    /// Seconds one storage operation may take, the SDK's retries included,
    /// before it fails as a transient error (a client gets "try again").
    pub storage_timeout_secs: u64,
    /// Seconds one attempt of a storage request may take (sending its body,
    /// an 8 MiB part at most, and receiving the answer's headers) before
    /// the SDK gives up on it and retries.
    pub storage_attempt_secs: u64,
    /// Attempts per storage request (the first included); retries back off
    /// exponentially with full jitter, so nodes sharing a bucket spread out.
    pub storage_attempts: u32,
    /// Seconds a body being read from storage may send nothing before the
    /// read fails (never a short success).
    pub storage_stall_secs: u64,
    /// Unfinished multipart uploads older than this are aborted at start
    /// and daily (under the tenants' prefixes).
    pub orphan_upload_age_secs: u64,
    /// Seconds a stopping server (SIGTERM) lets open transfers finish
    /// before it tells the clients still connected that it is shutting down
    /// and closes their connections.
    pub drain_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_unauthenticated: 64,
            max_unauthenticated_per_source: 16,
            login_grace_secs: 30,
            max_auth_attempts: 6,
            auth_reject_ms: 300,
            idle_timeout_secs: 900,
            sftp_max_packet: 256 * 1024 + 1024,
            sftp_max_read: 255 * 1024,
            sftp_max_handles: 64,
            sftp_max_inflight: 64,
            sftp_queued_reply_bytes: 1024 * 1024,
            read_ahead_bytes: 2 * 1024 * 1024,
            read_ahead_connection_bytes: 64 * 1024 * 1024,
            read_ahead_total_bytes: 512 * 1024 * 1024,
            range_read_bytes: 4 * 1024 * 1024,
            range_reads_per_file: 8,
            range_reads_total: 128,
            ssh_max_channels: 8,
            ftp_max_line: 4096,
            ftp_data_connect_secs: 30,
            ftp_stall_secs: 120,
            ftp_stat_max_entries: 2000,
            ban_after_failures: 10,
            ban_secs: 60,
            ban_max_secs: 3600,
            defender_table_size: 65536,
            metadata_cache_secs: 60,
            metadata_cache_entries: 10_000,
            listing_fresh_ms: 1000,
            ingest_max_file_bytes: 4 * 1024 * 1024 * 1024,
            ingest_max_session_bytes: 16 * 1024 * 1024 * 1024,
            ingest_max_concurrent_uploads: 32,
            ingest_idle_timeout_secs: 60,
            ingest_min_free_bytes: 1024 * 1024 * 1024,
            archive_concurrency: 2,
            archive_max_failures: 3,
            job_concurrency: 4,
            render_concurrency: 2,
            render_threads: 0,
            render_timeout_secs: 3600,
            render_memory_mib: 1024,
            storage_timeout_secs: 30,
            storage_attempt_secs: 20,
            storage_attempts: 4,
            storage_stall_secs: 30,
            orphan_upload_age_secs: 24 * 3600,
            drain_secs: 20,
        }
    }
}

impl Limits {
    /// Rejects values that would break the server rather than limit it.
    pub fn check(&self) -> Result<(), String> {
        let nonzero: [(&str, u64); 27] = [
            (
                "sftp_queued_reply_bytes",
                self.sftp_queued_reply_bytes as u64,
            ),
            ("ftp_stat_max_entries", self.ftp_stat_max_entries as u64),
            ("ftp_stall_secs", self.ftp_stall_secs),
            ("archive_max_failures", self.archive_max_failures as u64),
            ("storage_attempt_secs", self.storage_attempt_secs),
            ("storage_attempts", self.storage_attempts as u64),
            (
                "max_unauthenticated_per_source",
                self.max_unauthenticated_per_source as u64,
            ),
            ("storage_timeout_secs", self.storage_timeout_secs),
            ("storage_stall_secs", self.storage_stall_secs),
            ("render_timeout_secs", self.render_timeout_secs),
            ("render_memory_mib", self.render_memory_mib),
            ("render_concurrency", self.render_concurrency as u64),
            ("ftp_data_connect_secs", self.ftp_data_connect_secs),
            ("ingest_max_file_bytes", self.ingest_max_file_bytes),
            (
                "ingest_max_concurrent_uploads",
                self.ingest_max_concurrent_uploads as u64,
            ),
            ("ingest_idle_timeout_secs", self.ingest_idle_timeout_secs),
            ("archive_concurrency", self.archive_concurrency as u64),
            ("job_concurrency", self.job_concurrency as u64),
            ("max_connections", self.max_connections as u64),
            ("max_unauthenticated", self.max_unauthenticated as u64),
            ("login_grace_secs", self.login_grace_secs),
            ("max_auth_attempts", self.max_auth_attempts as u64),
            ("sftp_max_handles", self.sftp_max_handles as u64),
            ("sftp_max_inflight", self.sftp_max_inflight as u64),
            ("ssh_max_channels", self.ssh_max_channels as u64),
            ("ban_after_failures", self.ban_after_failures as u64),
            ("defender_table_size", self.defender_table_size as u64),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.sftp_max_packet < 34_000 {
            return Err(
                "sftp_max_packet must be at least 34000 (SFTP clients send 32 KiB packets)".into(),
            );
        }
        if !(4096..=4 * 1024 * 1024).contains(&self.sftp_max_read) {
            return Err("sftp_max_read must be between 4096 and 4194304".into());
        }
        if !(512..=65536).contains(&self.ftp_max_line) {
            return Err("ftp_max_line must be between 512 and 65536".into());
        }
        if self.render_threads > MAX_RENDER_THREADS {
            return Err(format!(
                "render_threads must be between 0 (the cores divided by render_concurrency) and {MAX_RENDER_THREADS}"
            ));
        }
        if self.read_ahead_bytes < 64 * 1024 {
            return Err("read_ahead_bytes must be at least 65536".into());
        }
        if self.read_ahead_connection_bytes < self.read_ahead_bytes
            || self.read_ahead_total_bytes < self.read_ahead_connection_bytes
        {
            return Err(
                "read_ahead_bytes <= read_ahead_connection_bytes <= read_ahead_total_bytes must hold"
                    .into(),
            );
        }
        if !(256 * 1024..=64 * 1024 * 1024).contains(&self.range_read_bytes) {
            return Err("range_read_bytes must be between 262144 and 67108864".into());
        }
        if self.listing_fresh_ms > 60_000 {
            return Err(
                "listing_fresh_ms must be between 0 (every listing asks storage) and 60000".into(),
            );
        }
        if !(1..=64).contains(&self.range_reads_per_file) {
            return Err("range_reads_per_file must be between 1 (one stream) and 64".into());
        }
        if self.range_reads_total < self.range_reads_per_file {
            return Err("range_reads_total must be at least range_reads_per_file".into());
        }
        Ok(())
    }

    /// The x264 encoders of a new session's MP4 (`render_threads`, or for
    /// 0 the cores divided by `render_concurrency`, at least 1).
    pub fn render_threads(&self) -> u32 {
        if self.render_threads > 0 {
            return self.render_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = cores / self.render_concurrency.max(1);
        (t.max(1) as u32).min(MAX_RENDER_THREADS)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    pub fn login_grace(&self) -> Duration {
        Duration::from_secs(self.login_grace_secs)
    }

    pub fn metadata_ttl(&self) -> Duration {
        Duration::from_secs(self.metadata_cache_secs)
    }

    pub fn listing_fresh(&self) -> Duration {
        Duration::from_millis(self.listing_fresh_ms)
    }
}
