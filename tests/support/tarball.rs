//! Hand-made tar layers: a raw ustar writer that, unlike tar libraries, will write the
//! hostile entries (`..`, absolute paths, links out of the tree, device nodes) the
//! extraction tests need.

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory.
    Dir { path: String, mode: u32 },
    /// A regular file.
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A regular file with owner, mtime and xattrs.
    FileWith {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
        data: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    /// A symbolic link.
    Symlink { path: String, target: String },
    /// A hard link to an earlier entry.
    Hardlink { path: String, target: String },
    /// A character device.
    CharDev {
        path: String,
        major: u32,
        minor: u32,
    },
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

struct Hdr<'a> {
    path: &'a str,
    kind: u8,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    mtime: u64,
    link: &'a str,
    dev: (u32, u32),
}

fn header(hdr: Hdr<'_>) -> [u8; 512] {
    let Hdr {
        path,
        kind,
        mode,
        owner: (uid, gid),
        size,
        mtime,
        link,
        dev,
    } = hdr;
    let mut h = [0u8; 512];
    assert!(
        path.len() <= 100 && link.len() <= 100,
        "test paths must fit ustar fields"
    );
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(uid));
    octal(&mut h[116..124], u64::from(gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(dev.0));
    octal(&mut h[337..345], u64::from(dev.1));
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts itself.
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The uncompressed tar of `entries`, with the end-of-archive blocks.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            Entry::Dir { path, mode } => out.extend_from_slice(&header(Hdr {
                path,
                kind: b'5',
                mode: *mode,
                owner: (0, 0),
                size: 0,
                mtime: 1_700_000_000,
                link: "",
                dev: (0, 0),
            })),
            Entry::File { path, mode, data } => {
                out.extend_from_slice(&header(Hdr {
                    path,
                    kind: b'0',
                    mode: *mode,
                    owner: (0, 0),
                    size: data.len() as u64,
                    mtime: 1_700_000_000,
                    link: "",
                    dev: (0, 0),
                }));
                out.extend_from_slice(data);
                pad(&mut out);
            }
            Entry::FileWith {
                path,
                mode,
                uid,
                gid,
                mtime,
                data,
                xattrs,
            } => {
                if !xattrs.is_empty() {
                    let mut records = Vec::new();
                    for (k, v) in xattrs {
                        records.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
                    }
                    out.extend_from_slice(&header(Hdr {
                        path: "PaxHeader",
                        kind: b'x',
                        mode: 0o644,
                        owner: (0, 0),
                        size: records.len() as u64,
                        mtime: 0,
                        link: "",
                        dev: (0, 0),
                    }));
                    out.extend_from_slice(&records);
                    pad(&mut out);
                }
                out.extend_from_slice(&header(Hdr {
                    path,
                    kind: b'0',
                    mode: *mode,
                    owner: (*uid, *gid),
                    size: data.len() as u64,
                    mtime: *mtime,
                    link: "",
                    dev: (0, 0),
                }));
                out.extend_from_slice(data);
                pad(&mut out);
            }
            Entry::Symlink { path, target } => out.extend_from_slice(&header(Hdr {
                path,
                kind: b'2',
                mode: 0o777,
                owner: (0, 0),
                size: 0,
                mtime: 1_700_000_000,
                link: target,
                dev: (0, 0),
            })),
            Entry::Hardlink { path, target } => out.extend_from_slice(&header(Hdr {
                path,
                kind: b'1',
                mode: 0o644,
                owner: (0, 0),
                size: 0,
                mtime: 1_700_000_000,
                link: target,
                dev: (0, 0),
            })),
            Entry::CharDev { path, major, minor } => out.extend_from_slice(&header(Hdr {
                path,
                kind: b'3',
                mode: 0o666,
                owner: (0, 0),
                size: 0,
                mtime: 1_700_000_000,
                link: "",
                dev: (*major, *minor),
            })),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Shorthand for a file entry.
pub fn file(path: &str, data: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        mode: 0o644,
        data: data.to_vec(),
    }
}

/// Shorthand for a directory entry.
pub fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}
