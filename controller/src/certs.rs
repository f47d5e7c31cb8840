//! `aiwan certs`: a small CA for the southbound's mutual TLS, for a lab or
//! a first install: the CA, then a server certificate per router agent
//! (its addresses and names) and a client certificate for the controller.
//! Files are written mode 0600 (keys) or 0644 and never overwritten.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Make a CA: DIR/ca.pem and DIR/ca.key.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "aiwan southbound CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue DIR/NAME.pem and DIR/NAME.key, signed by DIR/ca.pem.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The certificate's name (a router's node id, or the controller's).
        #[arg(long)]
        name: String,
        /// For an agent: the addresses and host names controllers dial it
        /// by (repeat; IP addresses become IP SANs).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// A controller's client certificate instead of an agent's server
        /// one.
        #[arg(long)]
        client: bool,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An agent: TLS server, named by `hosts`.
    Agent,
    /// A controller: TLS client.
    Controller,
}

/// A validity window.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) for `days`.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A new CA.
pub fn new_ca(name: &str, validity: Validity) -> anyhow::Result<Issued> {
    let key = KeyPair::generate().context("generating the CA's key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate signed by `ca` for `name`: an agent's (server, with
/// `hosts` as its names) or a controller's (client).
pub fn issue(
    ca: &Issued,
    name: &str,
    hosts: &[String],
    role: Role,
    validity: Validity,
) -> anyhow::Result<Issued> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("the CA's key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).context("the CA's certificate")?;
    let names = match role {
        Role::Agent => {
            anyhow::ensure!(
                !hosts.is_empty(),
                "an agent's certificate needs --host: the addresses or names controllers dial"
            );
            hosts.to_vec()
        }
        Role::Controller => vec![name.to_string()],
    };
    let mut params = CertificateParams::new(names).context("certificate names")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match role {
        Role::Agent => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Controller => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate().context("generating the key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// `aiwan certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    match &args.command {
        CertsCommand::Ca { dir, name, days } => {
            let ca = new_ca(name, Validity::days_from_now(*days))?;
            write_pair(dir, "ca", &ca)?;
            println!("{}", dir.join("ca.pem").display());
        }
        CertsCommand::Issue {
            dir,
            name,
            hosts,
            client,
            days,
        } => {
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !name.starts_with('.'),
                "--name {name:?}: letters, digits, '-', '_' and '.' only (it names the files)"
            );
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("{} (make it with `aiwan certs ca`)", path.display()))
            };
            let ca = Issued {
                cert_pem: read("ca.pem")?,
                key_pem: read("ca.key")?,
            };
            let role = if *client {
                Role::Controller
            } else {
                Role::Agent
            };
            let issued = issue(&ca, name, hosts, role, Validity::days_from_now(*days))?;
            write_pair(dir, name, &issued)?;
            println!("{}", dir.join(format!("{name}.pem")).display());
        }
    }
    Ok(())
}

/// Writes NAME.pem (0644) and NAME.key (0600) in `dir` (made 0700 when
/// new), refusing to replace either.
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    for path in [&cert, &key] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists: not replaced (move it away to issue again)",
            path.display()
        );
    }
    for (path, text, mode) in [
        (&key, &issued.key_pem, 0o600),
        (&cert, &issued.cert_pem, 0o644),
    ] {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_once_and_keys_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let run_ca = CertsArgs {
            command: CertsCommand::Ca {
                dir: certs.clone(),
                name: "test CA".into(),
                days: 10,
            },
        };
        run(&run_ca).expect("ca");
        let mode = |file: &str| {
            std::fs::metadata(certs.join(file))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
        let again = run(&run_ca).expect_err("not replaced").to_string();
        assert!(again.contains("ca.pem exists"), "{again}");
        let agent = CertsArgs {
            command: CertsCommand::Issue {
                dir: certs.clone(),
                name: "wan-a".into(),
                hosts: vec!["10.0.0.1".into(), "wan-a.example".into()],
                client: false,
                days: 10,
            },
        };
        run(&agent).expect("agent");
        assert_eq!(mode("wan-a.key"), 0o600);
        let no_host = CertsArgs {
            command: CertsCommand::Issue {
                dir: certs.clone(),
                name: "wan-b".into(),
                hosts: Vec::new(),
                client: false,
                days: 10,
            },
        };
        let error = run(&no_host).expect_err("no host").to_string();
        assert!(error.contains("--host"), "{error}");
        let bad_name = CertsArgs {
            command: CertsCommand::Issue {
                dir: certs,
                name: "../x".into(),
                hosts: vec!["h".into()],
                client: true,
                days: 10,
            },
        };
        let error = run(&bad_name).expect_err("bad name").to_string();
        assert!(error.contains("--name"), "{error}");
    }
}
