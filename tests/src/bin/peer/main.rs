//! Traffic peer for the end-to-end tests: moves exact payloads over real sockets and prints what
//! it actually sent and received, so tests can compare sockscope's counts with the truth.
//!
//! TCP protocol: the client sends a 16-byte header (payload length, reply length, both u64 BE),
//! then the payload; the server reads it all, sends the reply, and closes once the client has
//! closed. Header bytes are payload too: a client's "sent" is 16 + payload.
//!
//! Usage (`sockscope-peer help <command>` for each one's arguments):
//!   sockscope-peer tcp-server <bind addr> <connections>
//!   sockscope-peer tcp-client <addr> <connections> <concurrency> <send> <reply> [hold-file [send2 reply2]]
//!   sockscope-peer udp-server <bind addr> <datagrams> <reply size>
//!   sockscope-peer udp-client <addr> <datagrams> <size> [threads [hold-file datagrams]...]
//!       threads share one socket, each sends the datagrams (one in flight, waiting for the
//!       reply); then per hold file: prints `phase sent <n> received <m>`, waits for the file,
//!       sends that many more
//!   sockscope-peer udp-spray <count> [size [first]]   one datagram to each of count addresses
//!   sockscope-peer dns-spray <server addr> <count> <zone> [qtype]   count distinct names (or types)
//!   sockscope-peer udp-ports <ip> <port>... [first-last]...   one 10-byte datagram to each port
//!   sockscope-peer dns-spoof <bind addr> <to addr> <id> <qname> <ipv4>
//!       an A answer (qname -> ipv4, id) from bind (port 53) to a socket that may not have asked
//!   sockscope-peer dns-victim <bind addr> <server addr> <qname|-> <id> <connect addr> <send> <reply>
//!       with a qname, asks the server (A, id); then waits for one datagram and, after it, does
//!       one TCP exchange with connect addr; prints `ready <port>`, `answered`, totals
//!   sockscope-peer connect-refused <addr>
//!   sockscope-peer tcp-late-connect <addr> <hold-file> <send> <reply>   creates its socket and
//!       prints `socket`, connects once the hold file exists, does one exchange
//!   sockscope-peer http-server <bind addr> <threads>   (benchmarks: HTTP/1.1, keep-alive unless
//!       the request says `Connection: close`)
//!   sockscope-peer connect-rate <addr> <per second> <seconds>   paced HTTP connections, one
//!       request each; prints `connections <n>`
//!   sockscope-peer empty-hooks <cgroup path>   sockscope's empty programs at its hooks (the
//!       benchmark's floor); prints `ready`, holds them until killed
//!   sockscope-peer resolve <name> [port send reply [family]]
//!       getaddrinfo() through the system resolver, then (with a port) one TCP exchange with
//!       the first address of `family` (4, 6 or any); prints `resolved <ip>` and `connected <ip>`
//!   sockscope-peer dns-tcp <server addr> <split|pipeline> <qname>...   A queries over one TCP
//!       connection: `split` sends the first one's header and question in two segments, the
//!       second's length in two, the third's header in two, one query at a time; `pipeline` sends them all in one write; prints `rcode <n>` per answer
//!   sockscope-peer dns-junk <server addr>       malformed DNS payloads to port 53, one by one
//!   sockscope-peer dns-junk-server <bind addr> <count>   echoes them with the QR bit flipped
//!   sockscope-peer tcp-reset-server <bind addr>   one connection, closed with a reset
//!   sockscope-peer connect-reset <addr>   a connection the server resets
//!   sockscope-peer tun-delay <ns a> <addr a> <ns b> <addr b> <ms>   a link holding packets
//!
//! Servers print `ready <port>` once listening. Everyone prints `sent <n> received <m>` at the end.
//! `--linger <file>` (any command): then print `lingering` and wait for the file before exiting.
//! With a hold file, each client keeps its connections open after the exchange until the file
//! exists, then (with send2/reply2) does a second exchange on each before closing.
mod dns;
mod hooks;
mod http;
mod kube;
mod otlp;
mod tcp;
mod tun;
mod udp;

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "sockscope-peer",
    about = "Traffic peer of sockscope's end-to-end tests and benchmarks"
)]
struct Cli {
    /// After the command, print `lingering` and wait until FILE exists before exiting: a
    /// container's cgroup goes with its last process, and the agent names an owner from its
    /// cgroup, so a container's process outlives its traffic until the test has seen it counted.
    #[arg(long, global = true, value_name = "FILE")]
    linger: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accepts `connections` exchanges.
    TcpServer {
        bind: SocketAddr,
        connections: usize,
        /// listen(2) backlog (the accept queue holds backlog + 1 connections; more SYNs are
        /// dropped, and the clients retransmit them after 1 s).
        #[arg(long)]
        backlog: Option<i32>,
        /// Accept nothing for this long after `ready`.
        #[arg(long, value_name = "MS")]
        accept_after: Option<u64>,
    },
    /// Accepts one connection, reads what the client sends, and closes with SO_LINGER 0: a
    /// reset instead of a FIN.
    TcpResetServer { bind: SocketAddr },
    /// Connects, sends a few bytes and expects the connection to be reset.
    ConnectReset { addr: SocketAddr },
    /// A link between two network namespaces through TUN devices, holding every packet `delay`
    /// milliseconds each way (a round trip of twice that): `ready` once up, until killed.
    TunDelay {
        /// Namespace (under /run/netns) and address of one end.
        ns_a: String,
        addr_a: std::net::Ipv4Addr,
        /// Namespace and address of the other end.
        ns_b: String,
        addr_b: std::net::Ipv4Addr,
        delay: u64,
    },
    /// `connections` exchanges, `concurrency` at a time; with a hold file, keeps them open until
    /// it exists (then a second exchange of send2/reply2 on each).
    TcpClient {
        addr: SocketAddr,
        connections: usize,
        concurrency: usize,
        send: u64,
        reply: u64,
        hold: Option<String>,
        send2: Option<u64>,
        reply2: Option<u64>,
    },
    /// Answers `datagrams` datagrams with `reply` bytes each.
    UdpServer {
        bind: SocketAddr,
        datagrams: usize,
        reply: usize,
    },
    /// `datagrams` exchanges per thread on one socket, then per (hold file, datagrams) phase:
    /// waits for the file and sends that many more.
    UdpClient {
        addr: SocketAddr,
        datagrams: usize,
        size: usize,
        threads: Option<usize>,
        phases: Vec<String>,
    },
    /// One datagram to each of `count` addresses of 10.200.0.0/14.
    UdpSpray {
        count: usize,
        size: Option<usize>,
        first: Option<usize>,
    },
    /// `count` distinct names (or, with a qtype, record types) under `zone`.
    DnsSpray {
        server: SocketAddr,
        count: usize,
        zone: String,
        qtype: Option<u16>,
    },
    /// One 10-byte datagram to each port (`n` or `first-last`).
    UdpPorts {
        ip: IpAddr,
        #[arg(required = true)]
        ports: Vec<String>,
        /// Go on when a send fails (a filter dropping the datagrams on the way out makes
        /// sendto(2) fail with EPERM); `sent <n>` then counts the attempts.
        #[arg(long)]
        ignore_errors: bool,
    },
    /// An A answer (qname -> ip, id) from bind to a socket that may not have asked.
    DnsSpoof {
        bind: SocketAddr,
        to: SocketAddr,
        id: u16,
        qname: String,
        ip: Ipv4Addr,
    },
    /// Asks the server (unless qname is `-`), waits for one datagram, then one TCP exchange.
    DnsVictim {
        bind: SocketAddr,
        server: SocketAddr,
        qname: String,
        id: u16,
        connect: SocketAddr,
        send: u64,
        reply: u64,
    },
    /// Expects its connect to be refused.
    ConnectRefused { addr: SocketAddr },
    /// Creates its socket, connects once the hold file exists, does one exchange.
    TcpLateConnect {
        addr: SocketAddr,
        hold: String,
        send: u64,
        reply: u64,
    },
    /// HTTP/1.1 with keep-alive (benchmarks).
    HttpServer { bind: SocketAddr, threads: usize },
    /// Paced HTTP connections, one request each.
    ConnectRate {
        addr: SocketAddr,
        per_second: u64,
        seconds: u64,
    },
    /// sockscope's empty programs at its hooks under a cgroup, until killed.
    EmptyHooks { cgroup: String },
    /// getaddrinfo(), then with a port one TCP exchange with the first address of `family`
    /// (4, 6 or any).
    Resolve {
        name: String,
        port: Option<u16>,
        #[arg(requires = "port")]
        send: Option<u64>,
        #[arg(requires = "send")]
        reply: Option<u64>,
        family: Option<String>,
    },
    /// A queries over one TCP connection; prints `rcode <n>` for each answer.
    DnsTcp {
        server: SocketAddr,
        /// `split`: the first query's header and question leave in two segments (100 ms
        /// apart), the second's length is cut after its first byte likewise, the third's header
        /// in its middle, each leaves after the answer before it; `pipeline`: all in one write.
        #[arg(value_parser = ["split", "pipeline"])]
        mode: String,
        #[arg(required = true)]
        qnames: Vec<String>,
    },
    /// Malformed DNS payloads to port 53, one by one.
    DnsJunk { server: SocketAddr },
    /// Echoes `count` datagrams with the QR bit flipped.
    DnsJunkServer { bind: SocketAddr, count: usize },
    /// A synthetic cluster behind the in-test Kubernetes API server.
    KubeApi {
        pods: u64,
        services: u64,
        nodes: u64,
    },
    /// An OTLP receiver that prints what it receives.
    OtlpReceiver {
        #[arg(value_parser = ["grpc", "http"])]
        kind: String,
        bind: SocketAddr,
        /// Serve TLS with this certificate and key.
        #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
        tls: Option<Vec<String>>,
        /// Require client certificates signed by this CA (mTLS).
        #[arg(long)]
        client_ca: Option<String>,
        /// Answer the first REQUESTS requests "retry after SECONDS".
        #[arg(long, num_args = 2, value_names = ["REQUESTS", "SECONDS"])]
        throttle: Option<Vec<u64>>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli.command).and_then(|()| match cli.linger {
        Some(file) => linger(&file),
        None => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for `file` (`--linger`), for at most ten minutes.
fn linger(file: &std::path::Path) -> Res<()> {
    say("lingering");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !file.exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{} did not appear", file.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

fn run(command: Command) -> Res<()> {
    match command {
        Command::TcpServer {
            bind,
            connections,
            backlog,
            accept_after,
        } => tcp::tcp_server(bind, connections, backlog, accept_after),
        Command::TcpResetServer { bind } => tcp::tcp_reset_server(bind),
        Command::ConnectReset { addr } => tcp::connect_reset(addr),
        Command::TunDelay {
            ns_a,
            addr_a,
            ns_b,
            addr_b,
            delay,
        } => tun::tun_delay((&ns_a, addr_a), (&ns_b, addr_b), delay),
        Command::TcpClient {
            addr,
            connections,
            concurrency,
            send,
            reply,
            hold,
            send2,
            reply2,
        } => tcp::tcp_client(
            addr,
            connections,
            concurrency,
            (send, reply),
            hold,
            send2.zip(reply2),
        ),
        Command::UdpServer {
            bind,
            datagrams,
            reply,
        } => udp::udp_server(bind, datagrams, reply),
        Command::UdpClient {
            addr,
            datagrams,
            size,
            threads,
            phases,
        } => udp::udp_client(addr, datagrams, size, threads.unwrap_or(1), &phases),
        Command::UdpSpray { count, size, first } => {
            udp::udp_spray(count, size.unwrap_or(1), first.unwrap_or(0))
        }
        Command::DnsSpray {
            server,
            count,
            zone,
            qtype,
        } => dns::dns_spray(server, count, zone, qtype),
        Command::UdpPorts {
            ip,
            ports,
            ignore_errors,
        } => udp::udp_ports(ip, &ports, ignore_errors),
        Command::DnsSpoof {
            bind,
            to,
            id,
            qname,
            ip,
        } => dns::dns_spoof(bind, to, id, qname, ip),
        Command::DnsVictim {
            bind,
            server,
            qname,
            id,
            connect,
            send,
            reply,
        } => dns::dns_victim((bind, server), qname, id, connect, (send, reply)),
        Command::ConnectRefused { addr } => tcp::connect_refused(addr),
        Command::TcpLateConnect {
            addr,
            hold,
            send,
            reply,
        } => tcp::tcp_late_connect(addr, hold, send, reply),
        Command::HttpServer { bind, threads } => http::http_server(bind, threads),
        Command::ConnectRate {
            addr,
            per_second,
            seconds,
        } => http::connect_rate(addr, per_second, seconds),
        Command::EmptyHooks { cgroup } => hooks::empty_hooks(cgroup),
        Command::Resolve {
            name,
            port,
            send,
            reply,
            family,
        } => match (port, send, reply) {
            (Some(port), Some(send), Some(reply)) => dns::resolve(
                name,
                Some(dns::Exchange {
                    port,
                    send,
                    reply,
                    family,
                }),
            ),
            (Some(_), _, _) => Err("resolve: a port needs send and reply sizes".into()),
            _ => dns::resolve(name, None),
        },
        Command::DnsTcp {
            server,
            mode,
            qnames,
        } => dns::dns_tcp(server, mode == "split", &qnames),
        Command::DnsJunk { server } => dns::dns_junk(server),
        Command::DnsJunkServer { bind, count } => dns::dns_junk_server(bind, count),
        Command::KubeApi {
            pods,
            services,
            nodes,
        } => kube::kube_api(pods, services, nodes),
        Command::OtlpReceiver {
            kind,
            bind,
            tls,
            client_ca,
            throttle,
        } => otlp::otlp_receiver(
            kind,
            bind,
            tls.map(|t| (t[0].clone(), t[1].clone())),
            client_ca,
            throttle.map_or((0, 0), |t| (t[0] as usize, t[1])),
        ),
    }
}

/// Parses argument `i` of a variable-length tail (udp-client phases).
fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Res<T> {
    args.get(i)
        .ok_or(format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}"))
}

/// One line to stdout, flushed: the tests read it as it comes.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
