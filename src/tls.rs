//! The TLS settings of outbound HTTPS (webhooks, `http` nodes, Rasa), shared by delivery and the
//! engine. (Inbound TLS, `tls.cert`/`tls.key`, is bound by the wiring with the listener.)

use crate::config::Config;

/// The TLS settings of outbound HTTPS (webhooks, `http` nodes, Rasa, translation and handover
/// providers): the public roots (Mozilla's, built in, so a minimal chroot needs no CA store) plus
/// `delivery.caFile`. The roots are borrowed from the binary, not copied; rustls parses them
/// when an agent makes its first HTTPS connection, so a plain-HTTP installation never pays for
/// them.
pub fn outbound(config: &Config) -> Result<ureq::tls::TlsConfig, String> {
    let mut roots: Vec<ureq::tls::Certificate<'static>> =
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| ureq::tls::Certificate::from_der(c)).collect();
    if let Some(file) = &config.delivery.ca_file {
        let pem = std::fs::read(file).map_err(|e| format!("cannot read delivery.caFile {}: {e}", file.display()))?;
        let mut n = 0;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => {
                    roots.push(c);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("delivery.caFile {}: {e}", file.display())),
            }
        }
        if n == 0 {
            return Err(format!("delivery.caFile {} holds no PEM certificate", file.display()));
        }
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
}

/// The TLS files the config names, read and parsed as `serve` will (`hookflow check`):
/// `delivery.caFile`, and `tls.cert` / `tls.key`; each problem as one line naming its setting.
pub fn check_files(config: &Config) -> Vec<String> {
    use ureq::tls::{PemItem, parse_pem};
    let mut problems = Vec::new();
    if config.delivery.ca_file.is_some()
        && let Err(e) = outbound(config)
    {
        problems.push(e);
    }
    let Some(tls) = &config.tls else { return problems };
    let files = [
        ("tls.cert", &tls.cert, false, "PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ("tls.key", &tls.key, true, "PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)"),
    ];
    let before = problems.len();
    let mut read = Vec::new();
    for (place, path, is_key, what) in files {
        let wanted = |i: &PemItem| {
            if is_key { matches!(i, PemItem::PrivateKey(_)) } else { matches!(i, PemItem::Certificate(_)) }
        };
        match std::fs::read(path) {
            Err(e) => problems.push(format!("{place}: cannot read {}: {e}", path.display())),
            Ok(pem) => {
                if !parse_pem(&pem).any(|i| i.is_ok_and(|i| wanted(&i))) {
                    problems.push(format!("{place}: {} holds no {what}", path.display()));
                }
                read.push(pem);
            }
        }
    }
    // Both read and of the right kinds: do they belong together? (`serve` builds the same.)
    if problems.len() == before
        && let [certificate, private_key] = <[Vec<u8>; 2]>::try_from(read).expect("two files read")
        && let Err(e) = (tiny_http::SslConfig { certificate, private_key }).check()
    {
        problems.push(format!(
            "tls.key: {} and tls.cert {} do not make a TLS server: {e} (is the key that of this certificate?)",
            tls.key.display(),
            tls.cert.display()
        ));
    }
    problems
}
