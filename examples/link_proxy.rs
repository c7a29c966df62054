//! The integration tests' storage fault proxy as a program, for the
//! benchmarks: a link model in front of an S3 server (each connection's
//! responses wait a first-byte delay and flow at most at a capped rate).
//!
//!     link_proxy LISTEN_PORT UPSTREAM_URL [--rate-mbps N] [--first-byte-ms N] [--count-file F]
//!
//! `--rate-mbps 0` removes the cap (to measure the proxy's own overhead).
//! The number of requests seen so far is written to the count file every
//! 50 ms. Prints `ready http://127.0.0.1:PORT` once listening. Loopback only.

#![forbid(unsafe_code)]

#[path = "../tests/it/faults.rs"]
#[allow(dead_code)]
mod faults;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: link_proxy LISTEN_PORT UPSTREAM_URL [--rate-mbps N] [--first-byte-ms N] [--count-file F]";
    let (Some(port), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut link = faults::Link::s3();
    let mut count_file = None;
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().unwrap_or_else(|| {
            eprintln!("{flag} needs a value\n{usage}");
            std::process::exit(2);
        });
        let number = || {
            value.parse::<f64>().unwrap_or_else(|_| {
                eprintln!("{flag}: {value:?} is not a number");
                std::process::exit(2);
            })
        };
        match flag.as_str() {
            "--rate-mbps" => {
                let mbps = number();
                link.bytes_per_sec = (mbps > 0.0).then_some(mbps * 1e6);
            }
            "--first-byte-ms" => link.first_byte = Duration::from_secs_f64(number() / 1000.0),
            "--count-file" => count_file = Some(value.clone()),
            _ => {
                eprintln!("unknown option {flag}\n{usage}");
                std::process::exit(2);
            }
        }
    }
    let proxy = faults::FaultProxy::start_on(&format!("127.0.0.1:{port}"), upstream, link);
    println!("ready {}", proxy.endpoint);
    loop {
        if let Some(f) = &count_file {
            let _ = std::fs::write(f, format!("{}\n", proxy.requests()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
