//! What a syslog message looks like: the options that shape it (`--log-opt`), and the
//! message itself in RFC 5424 (the default), RFC 5424 with microseconds, or RFC 3164, plus
//! RFC 6587 octet counting for TCP.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

/// The option keys this driver accepts.
pub const OPTION_KEYS: &[&str] = &["syslog-address", "syslog-facility", "syslog-format", "tag"];

/// How a message reaches the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message.
    Udp,
    /// A connection, messages framed by octet counting (RFC 6587 3.4.1).
    Tcp,
}

/// The message layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424, timestamps in seconds.
    Rfc5424,
    /// RFC 5424, timestamps in microseconds.
    Rfc5424Micro,
    /// The BSD format, RFC 3164.
    Rfc3164,
}

/// A container's syslog settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where to send.
    pub transport: Transport,
    /// The receiver.
    pub address: SocketAddr,
    /// Facility code (0 to 23).
    pub facility: u8,
    /// Layout.
    pub format: Format,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164), template already expanded.
    pub tag: String,
}

/// What `tag` templates may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image as given.
    pub image: String,
    /// Image id (`sha256:...`).
    pub image_id: String,
}

const FACILITIES: &[&str] = &[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

fn parse_address(text: &str) -> Result<(Transport, SocketAddr), String> {
    let (transport, rest) = if let Some(rest) = text.strip_prefix("udp://") {
        (Transport::Udp, rest)
    } else if let Some(rest) = text.strip_prefix("tcp://") {
        (Transport::Tcp, rest)
    } else {
        return Err(format!(
            "syslog-address {text:?}: use udp://IP:PORT or tcp://IP:PORT (unix sockets and TLS are not supported)"
        ));
    };
    if let Ok(address) = rest.parse::<SocketAddr>() {
        return Ok((transport, address));
    }
    // Without a port: the syslog port.
    let bare = rest.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok((transport, SocketAddr::new(ip, 514))),
        Err(_) => Err(format!(
            "syslog-address {text:?}: the host must be an IP address (plugins cannot look names up)"
        )),
    }
}

/// Expands docker's tag templates: `{{.ID}}` (12 digits), `{{.FullID}}`, `{{.Name}}`,
/// `{{.ImageName}}`, `{{.ImageID}}` (12 digits), `{{.ImageFullID}}`.
fn expand_tag(template: &str, c: &Container) -> Result<String, String> {
    let short = |s: &str| s.chars().take(12).collect::<String>();
    let image_hex = c.image_id.strip_prefix("sha256:").unwrap_or(&c.image_id);
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            return Err(format!("tag {template:?}: unclosed {{{{"));
        };
        let field = rest[start + 2..start + end].trim();
        out.push_str(&match field {
            ".ID" => short(&c.id),
            ".FullID" => c.id.clone(),
            ".Name" => c.name.clone(),
            ".ImageName" => c.image.clone(),
            ".ImageID" => short(image_hex),
            ".ImageFullID" => c.image_id.clone(),
            other => {
                return Err(format!(
                    "tag {template:?}: unknown field {other} (use .ID, .FullID, .Name, .ImageName, .ImageID or .ImageFullID)"
                ));
            }
        });
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Options {
    /// Parses `--log-opt` pairs (keys already checked against [`OPTION_KEYS`]).
    pub fn parse(pairs: &[(String, String)], container: &Container) -> Result<Options, String> {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(address) = get("syslog-address") else {
            return Err("syslog-address is required (for example udp://192.0.2.10:514): this driver cannot reach /dev/log".into());
        };
        let (transport, address) = parse_address(address)?;
        let facility = match get("syslog-facility") {
            None => 3,
            Some(name) => match FACILITIES.iter().position(|f| *f == name) {
                Some(code) => code as u8,
                None => match name.parse::<u8>() {
                    Ok(code) if code < 24 => code,
                    _ => {
                        return Err(format!(
                            "syslog-facility {name:?}: use a name ({}) or 0 to 23",
                            FACILITIES.join(", ")
                        ));
                    }
                },
            },
        };
        let format = match get("syslog-format") {
            None | Some("rfc5424") => Format::Rfc5424,
            Some("rfc5424micro") => Format::Rfc5424Micro,
            Some("rfc3164") => Format::Rfc3164,
            Some(other) => {
                return Err(format!(
                    "syslog-format {other:?}: use rfc5424, rfc5424micro or rfc3164"
                ));
            }
        };
        let tag = expand_tag(get("tag").unwrap_or("{{.ID}}"), container)?;
        Ok(Options {
            transport,
            address,
            facility,
            format,
            tag: printable(&tag, 48),
        })
    }
}

/// At most `max` characters of `text`, printable US-ASCII only (RFC 5424 header fields).
fn printable(text: &str, max: usize) -> String {
    let out: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// Severity of a stream's lines: stdout is informational, stderr an error (as docker).
pub fn severity(stderr: bool) -> u8 {
    if stderr { 3 } else { 6 }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One message, without transport framing.
pub fn message(
    options: &Options,
    hostname: &str,
    stderr: bool,
    nanos: u64,
    line: &[u8],
) -> Vec<u8> {
    let pri = u16::from(options.facility) * 8 + u16::from(severity(stderr));
    let time = UNIX_EPOCH + Duration::from_nanos(nanos);
    let mut out = match options.format {
        Format::Rfc5424 | Format::Rfc5424Micro => {
            let stamp = if options.format == Format::Rfc5424 {
                humantime::format_rfc3339_seconds(time).to_string()
            } else {
                humantime::format_rfc3339_micros(time).to_string()
            };
            let msgid = if stderr { "stderr" } else { "stdout" };
            format!(
                "<{pri}>1 {stamp} {} {} - {msgid} - ",
                printable(hostname, 255),
                options.tag
            )
            .into_bytes()
        }
        Format::Rfc3164 => {
            // 2026-12-04T20:01:02Z -> Dec  4 20:01:02
            let stamp = humantime::format_rfc3339_seconds(time).to_string();
            let month: usize = stamp[5..7].parse().unwrap_or(1);
            let day: u32 = stamp[8..10].parse().unwrap_or(1);
            let host = if hostname == "-" {
                "localhost"
            } else {
                hostname
            };
            format!(
                "<{pri}>{} {day:>2} {} {} {}: ",
                MONTHS[month.clamp(1, 12) - 1],
                &stamp[11..19],
                printable(host, 255),
                options.tag
            )
            .into_bytes()
        }
    };
    out.extend_from_slice(line);
    out
}

/// `message` framed for TCP: its length in octets, a space, the message.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        Container {
            id: "0123456789abcdef".repeat(4),
            name: "web".into(),
            image: "busybox:latest".into(),
            image_id: format!("sha256:{}", "fedcba9876543210".repeat(4)),
        }
    }

    fn opts(kv: &[(&str, &str)]) -> Result<Options, String> {
        let pairs: Vec<(String, String)> =
            kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Options::parse(&pairs, &container())
    }

    #[test]
    fn rfc5424_messages() {
        let o = opts(&[("syslog-address", "udp://127.0.0.1:5514")]).unwrap();
        assert_eq!(o.transport, Transport::Udp);
        assert_eq!(o.address, "127.0.0.1:5514".parse().unwrap());
        assert_eq!(o.tag, "0123456789ab");
        let m = message(&o, "-", false, 1_700_000_000_123_456_789, b"hello world");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<30>1 2023-11-14T22:13:20Z - 0123456789ab - stdout - hello world"
        );
        let o = opts(&[
            ("syslog-address", "tcp://[::1]"),
            ("syslog-facility", "local3"),
            ("syslog-format", "rfc5424micro"),
            ("tag", "app/{{.Name}} {{.ImageID}}"),
        ])
        .unwrap();
        assert_eq!(o.address, "[::1]:514".parse().unwrap());
        let m = message(&o, "host1", true, 1_700_000_000_123_456_789, b"oops");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<155>1 2023-11-14T22:13:20.123456Z host1 app/web_fedcba987654 - stderr - oops"
        );
        assert_eq!(octet_counted(b"abc"), b"3 abc");
    }

    #[test]
    fn rfc3164_messages() {
        let o = opts(&[
            ("syslog-address", "udp://10.0.0.1:514"),
            ("syslog-format", "rfc3164"),
            ("tag", "{{.Name}}"),
        ])
        .unwrap();
        let m = message(&o, "-", false, 1_700_000_000_000_000_000, b"hi");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<30>Nov 14 22:13:20 localhost web: hi"
        );
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        assert!(opts(&[]).unwrap_err().contains("required"));
        assert!(
            opts(&[("syslog-address", "unix:///dev/log")])
                .unwrap_err()
                .contains("udp://")
        );
        assert!(
            opts(&[("syslog-address", "udp://logs.example:514")])
                .unwrap_err()
                .contains("IP address")
        );
        let bad = |k: &str, v: &str| {
            opts(&[("syslog-address", "udp://127.0.0.1:514"), (k, v)]).unwrap_err()
        };
        assert!(bad("syslog-facility", "nope").contains("syslog-facility"));
        assert!(bad("syslog-format", "json").contains("syslog-format"));
        assert!(bad("tag", "{{.Secret}}").contains("unknown field"));
    }
}
