#![forbid(unsafe_code)]
//! The `recvault` command: CLI parsing and logging set-up; the work is in the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

#[derive(Subcommand)]
enum AuditAction {
    /// Check audit files, oldest first, as one chain; with --config, also
    /// against the chain's heads the server anchored in the bucket (catches
    /// a cut-off tail and a recomputed chain).
    Verify {
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Write a new keyset with one key.
    New {
        file: PathBuf,
        /// Wrap it with this AWS KMS key (a Tink key URI,
        /// `aws-kms://arn:aws:kms:…`), as Tink's AWS KMS integration does.
        #[arg(long, value_name = "URI")]
        kms: Option<String>,
    },
    /// Add a new primary key (older keys keep reading what they encrypted).
    Rotate {
        file: PathBuf,
        /// The KMS key the keyset is wrapped with.
        #[arg(long, value_name = "URI")]
        kms: Option<String>,
    },
    /// List the keys: ids, the primary, segment sizes.
    Show {
        file: PathBuf,
        /// The KMS key the keyset is wrapped with.
        #[arg(long, value_name = "URI")]
        kms: Option<String>,
    },
}

#[derive(Parser)]
#[command(name = "recvault", version, about = "Contact-centre call recordings in S3, exported over SFTP", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every job over the sessions takes.
#[derive(clap::Args)]
struct JobArgs {
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// Only this tenant (default: every tenant).
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    /// Only sessions of calls started on or after this day (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE")]
    since: Option<chrono::NaiveDate>,
}

/// The job commands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobCommand {
    Verify,
    Backfill,
    Reencrypt,
    Reindex,
}

/// Runs a job command; exits 2 when it could not finish, 1 when `verify`
/// found mismatches.
fn run_job(args: JobArgs, job: JobCommand) -> Result<()> {
    let cfg = recvault::config::load(&args.config)?;
    init_tracing(cfg.log.format, "warn");
    let (tenant, since) = (args.tenant.as_deref(), args.since);
    let outcome = runtime()?.block_on(async {
        match job {
            JobCommand::Verify => recvault::jobs::verify::run_cli(&cfg, tenant, since).await,
            JobCommand::Backfill => recvault::jobs::backfill::run_cli(&cfg, tenant, since).await,
            JobCommand::Reindex => recvault::jobs::reindex::run_cli(&cfg, tenant, since).await,
            JobCommand::Reencrypt => match tenant {
                Some(_) => recvault::jobs::reencrypt::run_cli(&cfg, tenant, since).await,
                None => Err("name the tenant to re-encrypt: --tenant ID".into()),
            },
        }
    });
    let name = match job {
        JobCommand::Verify => "verify",
        JobCommand::Backfill => "backfill",
        JobCommand::Reencrypt => "reencrypt",
        JobCommand::Reindex => "reindex",
    };
    match outcome {
        Ok(n) if n > 0 && job == JobCommand::Verify => std::process::exit(1),
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("recvault {name}: {e}");
            std::process::exit(2)
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server with a configuration file (see config/recvault.example.toml).
    Serve {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run on the embedded default: local storage, a demo tenant and user
    /// (password printed), a generated host key and sample sessions.
    Demo {
        /// Folder for the demo's objects and keys.
        #[arg(long, default_value = "recvault-demo")]
        dir: PathBuf,
        /// Address the SFTP listener binds.
        #[arg(long, default_value = "127.0.0.1:2222")]
        listen: String,
        /// Address the explicit FTPS listener binds.
        #[arg(long, default_value = "127.0.0.1:2121")]
        ftps_listen: String,
    },
    /// Validate a configuration file and exit (status 0 when valid). Then,
    /// unless --offline, reach each tenant's storage and run the
    /// conditional-write self-test there, and say how day indexes are kept
    /// (storage that does not answer is reported, not an invalid file).
    CheckConfig {
        file: PathBuf,
        /// Only validate the file; do not reach storage.
        #[arg(long)]
        offline: bool,
    },
    /// Re-read every stored object of each session and check its size and
    /// SHA-256 against the session index; report every mismatch. Resumes an
    /// interrupted run ([jobs] state_dir). Exit status: 0 all match, 1
    /// mismatches found (listed on stdout), 2 the check could not finish.
    Verify(JobArgs),
    /// Give sessions archived before derived media existed their derived
    /// entries (reserved MP3/MP4 sizes, per-party files remuxed from the RAW
    /// archive). Sessions that have them are left alone; resumes an
    /// interrupted run ([jobs] state_dir). Exit status: 0 done, 2 could not
    /// finish. Running servers show the new entries once their metadata
    /// cache expires ([limits] metadata_cache_secs).
    Backfill(JobArgs),
    /// Seal every object of a tenant with `encryption = "recvault"` that its
    /// keyset's primary key did not seal (clear objects from before
    /// encryption was switched on; an older key's after a rotation). Each
    /// object is sealed as a copy, read back and checked against the index's
    /// SHA-256, then put in place of the old one; every object is audited;
    /// resumes an interrupted run. Versioned buckets keep the old versions:
    /// see the README. Exit status: 0 done, 2 could not finish.
    Reencrypt(JobArgs),
    /// Rebuild the day indexes (the listing of each day's sessions, SPEC
    /// §16) from the sessions themselves: one read of each session's
    /// info.json, the day's index rewritten where it differs (sessions
    /// archived meanwhile are kept). A day whose index is missing is also
    /// rebuilt on its first listing. Resumes an interrupted run at the day it
    /// was in. Exit status: 0 done, 2 could not finish.
    Reindex(JobArgs),
    /// Print an argon2id hash for a password read from the terminal or stdin (never argv).
    HashPassword,
    /// Print a new random secret (an ingest token or a content-API key) and the `sha256:` line for the config.
    GenToken,
    /// The audit trail: `verify FILE…` checks that every line follows the
    /// one before (seq and SHA-256 chain), oldest file first. Exit status: 0
    /// intact, 1 a line that does not follow (named on stdout), 2 unreadable.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Encryption keysets (Tink JSON, AES-256 streaming AEAD): `new FILE`
    /// writes a new one (mode 0600, never overwriting), `rotate FILE` adds a
    /// new primary key, `show FILE` lists its keys. No key material is printed.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Write a synthetic call (four MJR streams and info.json) for benchmarks.
    #[command(hide = true)]
    Fixture {
        /// Folder to write the session folder into.
        dir: PathBuf,
        #[arg(long, default_value = "fixture-1")]
        id: String,
        #[arg(long, default_value_t = 300)]
        seconds: u32,
    },
    /// Upload a session folder (MJR streams + info.json) to an ingest
    /// listener, complete it and wait until it is archived. Exit status: 0
    /// archived, 1 failed (the reason is printed), 3 still pending at --wait.
    Push {
        dir: PathBuf,
        /// The ingest listener, e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: String,
        /// The tenant's ingest token; or set RECVAULT_TOKEN.
        #[arg(long, env = "RECVAULT_TOKEN", hide_env_values = true)]
        token: String,
        /// Seconds to wait for the session to be archived.
        #[arg(long, default_value_t = 600)]
        wait: u64,
        /// PEM CA certificate(s) to trust for an https:// --url (default: the system's).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
    },
}

fn init_tracing(format: recvault::config::LogFormat, level: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // rustls warns about every client that sends an IP address as its TLS
    // server name (lftp, curl with an IP URL): normal here, not a problem.
    if let Ok(quiet) = "rustls::msgs::handshake=error".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        recvault::config::LogFormat::Json => builder.json().init(),
        recvault::config::LogFormat::Text => builder.init(),
    }
}

fn read_password() -> Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        if a != b {
            bail!("the two passwords differ");
        }
        Ok(a)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, offline } => {
            let cfg = recvault::config::load(&file)?;
            let users: usize = cfg.tenants.iter().map(|t| t.users.len()).sum();
            println!(
                "{}: valid ({} tenants, {} users)",
                file.display(),
                cfg.tenants.len(),
                users
            );
            if !offline {
                init_tracing(cfg.log.format, "error");
                for line in runtime()?.block_on(recvault::days::check_config(&cfg)) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::HashPassword => {
            let password = read_password()?;
            if password.is_empty() {
                bail!("refusing to hash an empty password");
            }
            println!(
                "{}",
                recvault::password::hash(&password).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Fixture { dir, id, seconds } => {
            let made = recvault::media::fixture::session(&dir, &id, seconds)
                .map_err(anyhow::Error::msg)?;
            println!("{}", made.display());
            Ok(())
        }
        Command::Audit {
            action: AuditAction::Verify { config, files },
        } => match audit_verify(config.as_deref(), &files) {
            Ok((recvault::audit::Verdict::Intact { lines, last_seq }, anchors)) => {
                let anchored = match anchors {
                    Some(n) => format!("; {n} anchors in the bucket match"),
                    None => "; not checked against the bucket's anchors (no --config)".into(),
                };
                println!(
                    "intact: {lines} lines, the chain runs from seq 1 to {last_seq}{anchored}"
                );
                Ok(())
            }
            Ok((recvault::audit::Verdict::Broken { file, line, why }, _)) => {
                println!("BROKEN {file}:{line}: {why}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("recvault audit verify: {e}");
                std::process::exit(2);
            }
        },
        Command::Keys { action } => {
            let text = runtime()?
                .block_on(async {
                    match action {
                        KeysAction::New { file, kms } => {
                            recvault::crypto::keys_new(&file, kms.as_deref()).await
                        }
                        KeysAction::Rotate { file, kms } => {
                            recvault::crypto::keys_rotate(&file, kms.as_deref()).await
                        }
                        KeysAction::Show { file, kms } => {
                            recvault::crypto::load_keyset(&file, kms.as_deref())
                                .await
                                .map(|set| recvault::crypto::describe(&file, &set))
                        }
                    }
                })
                .map_err(anyhow::Error::msg)?;
            print!("{text}");
            Ok(())
        }
        Command::GenToken => {
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw).context("no randomness")?;
            let token = hex::encode(raw);
            println!("token: {token}");
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            println!("config: ingest_tokens = [\"sha256:{hash}\"]");
            println!("   or, for the content API: [[tenants.api_keys]] key = \"sha256:{hash}\"");
            Ok(())
        }
        Command::Push {
            dir,
            url,
            token,
            wait,
            ca_file,
        } => {
            let outcome = runtime()?
                .block_on(recvault::push::push(
                    &dir,
                    &url,
                    &token,
                    ca_file.as_deref(),
                    std::time::Duration::from_secs(wait),
                ))
                .map_err(anyhow::Error::msg)?;
            match outcome {
                recvault::push::Outcome::Archived => {
                    println!("archived");
                    Ok(())
                }
                recvault::push::Outcome::Failed(reason) => {
                    eprintln!("recvault push: failed: {reason}");
                    std::process::exit(1)
                }
                recvault::push::Outcome::TimedOut(what) => {
                    eprintln!("recvault push: not archived yet: {what}");
                    std::process::exit(3)
                }
            }
        }
        Command::Verify(args) => run_job(args, JobCommand::Verify),
        Command::Backfill(args) => run_job(args, JobCommand::Backfill),
        Command::Reindex(args) => run_job(args, JobCommand::Reindex),
        Command::Reencrypt(args) => run_job(args, JobCommand::Reencrypt),
        Command::Serve { config } => {
            let cfg = recvault::config::load(&config)?;
            init_tracing(cfg.log.format, &cfg.log.level);
            runtime()?
                .block_on(recvault::server::serve(cfg, Some(config), None))
                .map_err(anyhow::Error::msg)
        }
        Command::Demo {
            dir,
            listen,
            ftps_listen,
        } => {
            init_tracing(recvault::config::LogFormat::Text, "info");
            runtime()?
                .block_on(recvault::demo::run(&dir, &listen, &ftps_listen))
                .map_err(anyhow::Error::msg)
        }
    }
}

/// `recvault audit verify`: the chain in `files`, and with a config the
/// anchors in its bucket; the verdict and how many anchors were checked.
fn audit_verify(
    config: Option<&std::path::Path>,
    files: &[PathBuf],
) -> Result<(recvault::audit::Verdict, Option<usize>), String> {
    let chain = recvault::audit::read_chain(files)?;
    let Some(config) = config else {
        return Ok((chain.verdict, None));
    };
    let cfg = recvault::config::load(config).map_err(|e| e.to_string())?;
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store: recvault::store::SharedStore =
            recvault::store::open(&cfg.storage, &cfg.limits).await?;
        let (verdict, n) = recvault::anchor::check(store.as_ref(), &chain).await?;
        Ok((verdict, Some(n)))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
