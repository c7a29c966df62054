//! recvault: contact-centre call recordings in S3, exported over SFTP and FTPS.
#![forbid(unsafe_code)]

pub mod admin; // the admin listener: Prometheus metrics, health, readiness
pub mod anchor; // the audit chain's heads, kept in the operator's bucket
pub mod api; // the content API (/v1): calls, media with Range, signed links, erase
pub mod audit; // the JSON audit trail (logins, downloads), chained line to line
pub mod auth; // users, argon2id passwords, public keys, the brute-force defender
pub mod config; // TOML → typed, validated configuration
pub mod crypto; // encryption at rest: Tink streaming AEAD, Tink JSON keysets
pub mod days; // the day index: updated safely on any store, read for listings
pub mod delivery; // delivery = "customer": backup first, then the customer's storage, verified
pub mod demo; // `recvault demo`: the embedded default
pub mod events; // call/render events: durable outbox, the event log in storage, signed webhooks
pub mod ftps; // FTP over TLS: accept loops, control channel, passive data connections
#[doc(hidden)]
pub mod fuzz; // entry points of the fuzz targets and their corpus replay
pub mod hostkey; // SSH host key: load or generate
pub mod http; // what every HTTP listener shares: answers (JSON, errors) and the accept loop
pub mod ingest; // HTTP intake of RAW sessions: spool, validation, archiver
pub mod jobs; // one runner for jobs over every session (verify), with checkpoints
pub mod layout; // the storage contract: every key shape, and the typed session index
pub mod limits; // every limit, with safe defaults
pub mod listener; // the shared accept loop: defender, connection cap, drain
pub mod media; // Janus MJR recordings and RTP
pub mod metrics; // the process's Prometheus metrics, fed by the audit funnel, gate and storage
pub mod net; // canonical addresses, allow-list networks, per-source grouping
pub mod password; // argon2id password hashes (PHC strings)
pub mod path; // the one canonical path type and its parser
pub mod proxy; // PROXY protocol v2 from trusted load balancers: the client's real address
pub mod push; // `recvault push`: the gateway-side upload client
pub mod sample; // writes sessions in the archived layout (demo, tests)
pub mod secret; // secret files: created 0600, refused when others can read them
pub mod server; // `recvault serve`: wiring, signals, readiness
pub mod sftp; // SFTP over SSH: accept loop, russh handler, SFTP request loop
pub mod shared; // what every connection shares, and its login/download/erase bookkeeping
pub mod store; // object storage: one trait; S3 and local-directory backends
pub mod tls; // TLS server configuration (rustls + ring) shared by ingest, the API and FTPS
pub mod vfs; // the tenant-scoped read-only virtual tree
