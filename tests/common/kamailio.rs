//! Kamailio as the business's SIP trunk provider (an ITSP), started by a
//! test with a config written here: it takes REGISTER with digest auth
//! (qop=auth), delivers calls for a DID to the registered contact (or, for
//! an IP trunk, straight to the box), answers and logs keepalive OPTIONS,
//! and pings registered contacts with OPTIONS (nathelper).

use super::{Reaped, wait_for};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the provider is set up for one test.
#[derive(Clone)]
pub struct Itsp {
    /// Loopback address it listens on (127.0.0.x, apart from the box's).
    pub ip: [u8; 4],
    pub port: u16,
    /// The box's account and password.
    pub user: String,
    pub password: String,
    /// "MD5" or "SHA-256".
    pub algorithm: &'static str,
    /// Shorter registrations get 423 with this Min-Expires.
    pub min_expires: u32,
    /// The DID callers dial; delivered to the registered account.
    pub did: String,
    /// IP trunk: calls for the DID go here, with no registration.
    pub box_addr: Option<std::net::SocketAddr>,
    /// Calls out from the box go here (a baresip "mobile"), once the box
    /// has answered the provider's 407; None: logged, then 480.
    pub pstn: Option<std::net::SocketAddr>,
    /// Also SIP over TLS on this port, with this certificate and key
    /// (kamailio-tls-modules).
    pub tls: Option<(u16, PathBuf, PathBuf)>,
}

/// A private CA and a certificate it signed for `ip` (openssl), as a
/// provider's TLS edge has: (CA certificate, certificate, key) in `dir`.
pub fn tls_pair(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let f = |n: &str| dir.join(n);
    let run = |args: &[&str]| super::openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Test ITSP CA",
            "-days",
            "2",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
            "-subj",
            &format!("/CN={ip}"),
        ],
    ]
    .concat());
    std::fs::write(
        f("ext.cnf"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (f("ca.pem"), f("cert.pem"), f("key.pem"))
}

pub struct Kamailio {
    pub proc: Reaped,
    pub log: PathBuf,
    pub itsp: Itsp,
    dir: PathBuf,
}

impl Itsp {
    pub fn addr(&self) -> String {
        let [a, b, c, d] = self.ip;
        format!("{a}.{b}.{c}.{d}:{}", self.port)
    }

    /// The TLS address, when it has one.
    pub fn tls_addr(&self) -> Option<String> {
        let [a, b, c, d] = self.ip;
        self.tls
            .as_ref()
            .map(|(p, _, _)| format!("{a}.{b}.{c}.{d}:{p}"))
    }

    fn config(&self, dir: &Path) -> String {
        let addr = self.addr();
        let tls = match (&self.tls, self.tls_addr()) {
            (Some((_, cert, key)), Some(taddr)) => {
                let cfg = dir.join("tls.cfg");
                std::fs::write(
                    &cfg,
                    format!(
                        "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
                         certificate = {}\nprivate_key = {}\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
                        cert.display(),
                        key.display()
                    ),
                )
                .unwrap();
                format!(
                    "enable_tls=yes\nlisten=tls:{taddr}\nalias=\"{taddr}\"\nloadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")\n",
                    cfg.display()
                )
            }
            _ => String::new(),
        };
        let alg = match self.algorithm {
            "MD5" => String::new(),
            a => format!("modparam(\"auth\", \"algorithm\", \"{a}\")\n"),
        };
        let deliver = match self.box_addr {
            // IP trunk: the DID stays in the Request-URI, sent to the box.
            Some(b) => format!("$du = \"sip:{b}\";"),
            // Registered trunk: the location lookup puts the box's contact
            // in the Request-URI; the DID is then only in To.
            None => format!(
                "$rU = \"{}\"; if (!lookup(\"location\")) {{ sl_send_reply(\"480\", \"Not Registered\"); exit; }}",
                self.user
            ),
        };
        format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
log_prefix="ITSP "
children=1
tcp_children=1
auto_aliases=no
listen=udp:{addr}
listen=tcp:{addr}
alias="{addr}"
{tls}
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"
loadmodule "nathelper.so"

{alg}modparam("htable", "htable", "acc=>size=4;")
modparam("registrar", "min_expires", {min})
modparam("registrar", "min_expires_mode", 1)
modparam("registrar", "max_expires", 3600)
modparam("usrloc", "nat_bflag", 6)
modparam("nathelper", "natping_interval", 2)
modparam("nathelper", "ping_nated_only", 0)
modparam("nathelper", "sipping_bflag", 7)
modparam("nathelper", "sipping_from", "sip:pinger@{addr}")

event_route[htable:mod-init] {{
    $sht(acc=>{user}) = "{password}";
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route() || is_method("ACK|BYE|CANCEL|INVITE|REFER|NOTIFY|UPDATE|INFO")) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay();
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        xlog("L_NOTICE", "keepalive OPTIONS from $si:$sp\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "REGISTER from $si:$sp user=$fU expires=$hdr(Expires)\n");
        if (!pv_www_authenticate("$td", "$sht(acc=>$fU)", "0")) {{
            www_challenge("$td", "1");
            exit;
        }}
        setbflag(6);
        setbflag(7);
        if (!save("location")) {{
            sl_reply_error();
            exit;
        }}
        xlog("L_NOTICE", "registered user=$fU contact=$ct\n");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        if ($rU == "{did}") {{
            xlog("L_NOTICE", "call for the DID from $si:$sp\n");
            {deliver}
            t_relay();
            exit;
        }}
        # A call out from the box: its account must authenticate (407).
        if (!pv_proxy_authenticate("$fd", "$sht(acc=>{user})", "0")) {{
            xlog("L_NOTICE", "challenged a call out from $si:$sp\n");
            proxy_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
        xlog("L_NOTICE", "call out to $rU from $fU pai=$hdr(P-Asserted-Identity)\n");
        {out}
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"#,
            out = match self.pstn {
                Some(p) => format!("$ru = \"sip:mobile@{p}\"; t_relay();"),
                None => "sl_send_reply(\"480\", \"Nobody There\");".into(),
            },
            min = self.min_expires,
            user = self.user,
            password = self.password,
            did = self.did,
        )
    }
}

impl Kamailio {
    /// Start Kamailio in the foreground with `itsp`'s config, in `dir`;
    /// wait until it answers on its port.
    pub fn start(dir: &Path, itsp: Itsp) -> Kamailio {
        let dir = dir.join(format!("kamailio-{}", itsp.port));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, itsp.config(&dir)).unwrap();
        let log = dir.join("kamailio.log");
        Self::spawn(dir, cfg, log, itsp)
    }

    fn spawn(dir: PathBuf, cfg: PathBuf, log: PathBuf, itsp: Itsp) -> Kamailio {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-Y"])
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: Kamailio forks workers that hold the
            // sockets, and stopping it means stopping them all.
            .process_group(0)
            .spawn()
            .expect("kamailio is installed (make test installs it)");
        let k = Kamailio {
            proc: Reaped(child),
            log,
            itsp,
            dir,
        };
        let addr = k.itsp.addr();
        wait_for(20, "kamailio to listen", || {
            std::net::TcpStream::connect(addr.as_str()).ok()
        });
        k
    }

    /// Stop it (the provider goes down); `restart` brings it back empty,
    /// as a provider's restarted edge forgets registrations.
    pub fn stop(&mut self) {
        kill_group(&mut self.proc);
    }

    pub fn restart(mut self) -> Kamailio {
        kill_group(&mut self.proc);
        let cfg = self.dir.join("kamailio.cfg");
        Self::spawn(self.dir.clone(), cfg, self.log.clone(), self.itsp.clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of its log holding `what`.
    pub fn count(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }
}

/// SIGKILL to Kamailio and every worker it forked.
fn kill_group(p: &mut Reaped) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", p.0.id())])
        .status();
    let _ = p.0.wait();
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        kill_group(&mut self.proc);
    }
}
