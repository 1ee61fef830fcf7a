//! The certificate files in `cert_dir`: `<service>.crt` (full chain, PEM) and
//! `<service>.key` (PEM, 0600), written atomically, read back and parsed, with a cache
//! keyed by the files' metadata so the check on every pass reads nothing that did not
//! change.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// The largest certificate or key file the agent reads: a chain is a few KiB.
pub const MAX_FILE: u64 = 1 << 20;

/// What a certificate file says, as far as keeping or renewing it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The leaf's DNS subject alternative names, lowercased, sorted.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex without separators.
    pub serial: String,
}

impl CertInfo {
    /// Whether the certificate is valid for `host` (exactly, or through a wildcard of
    /// one label).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *n == host,
        })
    }
}

/// The two files of a service in `dir`.
pub fn paths(dir: &Path, service: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{service}.crt")),
        dir.join(format!("{service}.key")),
    )
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is kept
/// as it is.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `path` atomically: a new file in the same directory (mode
/// `mode`, never readable by others in between), fsynced, renamed over `path`, and the
/// directory fsynced, so a crash leaves the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    commit(&[(tmp, path.to_path_buf())])
}

/// Writes a service's chain and key: both to temp files first (fsynced), then the key
/// renamed, then the chain, then the directory fsynced. A crash between the renames
/// leaves a key that does not match the chain, which [`read`] reports, and the next
/// check orders again.
pub fn write_pair(dir: &Path, service: &str, chain_pem: &str, key_pem: &str) -> io::Result<()> {
    ensure_dir(dir)?;
    let (crt, key) = paths(dir, service);
    let key_tmp = write_temp(&key, key_pem.as_bytes(), 0o600)?;
    let crt_tmp = match write_temp(&crt, chain_pem.as_bytes(), 0o644) {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&key_tmp);
            return Err(e);
        }
    };
    commit(&[(key_tmp, key), (crt_tmp, crt)])
}

fn write_temp(path: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let dir = parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; set exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames each temp file over its target, in order, then fsyncs the directory.
fn commit(renames: &[(PathBuf, PathBuf)]) -> io::Result<()> {
    for (i, (tmp, target)) in renames.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, target) {
            for (left, _) in &renames[i..] {
                let _ = fs::remove_file(left);
            }
            return Err(e);
        }
    }
    if let Some((_, target)) = renames.first() {
        File::open(parent(target))?.sync_all()?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads and checks a service's pair: `Ok(None)` when the certificate file is absent,
/// `Err(reason)` when either file is unreadable, not PEM, not a certificate or key, or
/// the key is not the certificate's.
pub fn read(dir: &Path, service: &str) -> Result<Option<CertInfo>, String> {
    let (crt, key) = paths(dir, service);
    let Some(chain) = read_small(&crt)? else {
        return Ok(None);
    };
    let key_pem = read_small(&key)?.ok_or_else(|| format!("{} is missing", key.display()))?;
    let key_pem = String::from_utf8(key_pem).map_err(|_| format!("{}: not PEM", key.display()))?;
    check(&chain, &key_pem)
        .map_err(|e| format!("{}: {e}", crt.display()))
        .map(Some)
}

/// Parses a chain and checks that `key_pem` is the leaf's key.
pub fn check(chain: &[u8], key_pem: &str) -> Result<CertInfo, String> {
    let (info, spki) = parse_chain(chain)?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("the key: {e}"))?;
    if key.public_key_raw() != spki.as_slice() {
        return Err("the key does not belong to the certificate".into());
    }
    Ok(info)
}

/// The leaf (first certificate) of a PEM chain, and its raw public key.
pub fn parse_chain(chain: &[u8]) -> Result<(CertInfo, Vec<u8>), String> {
    let pem = Pem::iter_from_buffer(chain)
        .next()
        .ok_or("no certificate in the file")?
        .map_err(|e| format!("not PEM: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!(
            "starts with a {:?} block, not a certificate",
            pem.label
        ));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    let time = |t: &x509_parser::time::ASN1Time| -> Result<SystemTime, String> {
        let secs = t.timestamp();
        let secs = u64::try_from(secs).map_err(|_| format!("date {t} is before 1970"))?;
        Ok(UNIX_EPOCH + Duration::from_secs(secs))
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subjectAltName: {e}")),
    };
    names.sort();
    names.dedup();
    let serial = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let info = CertInfo {
        names,
        not_before: time(&validity.not_before)?,
        not_after: time(&validity.not_after)?,
        serial: if serial.is_empty() {
            "0".into()
        } else {
            serial
        },
    };
    let spki = cert.public_key().subject_public_key.data.to_vec();
    Ok((info, spki))
}

/// A file's bytes; `None` when it does not exist.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    let mut buf = Vec::with_capacity(len as usize);
    io::Read::read_to_end(&mut io::Read::take(f, MAX_FILE + 1), &mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(buf))
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Parsed pairs by service, reused while neither file's inode, size, mtime or ctime
/// changed (an atomic replace is a new inode). A check of an unchanged pair is two
/// `stat`s.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<String, Cached>,
}

/// The stamps of a pair when it was read (certificate, key) and what reading said.
type Cached = (
    Option<Stamp>,
    Option<Stamp>,
    Result<Option<CertInfo>, String>,
);

impl Cache {
    pub fn read(&mut self, dir: &Path, service: &str) -> Result<Option<CertInfo>, String> {
        let (crt, key) = paths(dir, service);
        let stamps = (stamp(&crt), stamp(&key));
        if let Some((c, k, found)) = self.entries.get(service) {
            if (*c, *k) == stamps && stamps.0.is_some() {
                return found.clone();
            }
        }
        let found = read(dir, service);
        self.entries
            .insert(service.to_string(), (stamps.0, stamps.1, found.clone()));
        found
    }

    /// Drops the entries of services not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names`, valid from `not_before` to `not_after`
    /// (years), and its key.
    pub(crate) fn self_signed(names: &[&str], not_after_year: i32) -> (String, String) {
        self_signed_serial(names, not_after_year, &[0x00, 0x12, 0xab])
    }

    /// [`self_signed`] with the given serial number (big-endian bytes).
    pub(crate) fn self_signed_serial(
        names: &[&str],
        not_after_year: i32,
        serial: &[u8],
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_written_pair_reads_back_with_its_names_dates_and_serial() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let (chain, key) = self_signed(&["b.example", "A.example"], 2040);
        write_pair(&certs, "shop", &chain, &key).unwrap();
        assert_eq!(mode(&certs), 0o700);
        let (crt_path, key_path) = paths(&certs, "shop");
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&crt_path), 0o644);
        let info = read(&certs, "shop").unwrap().unwrap();
        assert_eq!(info.names, ["a.example", "b.example"]);
        assert_eq!(info.serial, "12ab");
        assert_eq!(
            humantime::format_rfc3339_seconds(info.not_after).to_string(),
            "2040-01-01T00:00:00Z"
        );
        // No temp file is left behind.
        let names: Vec<String> = fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.key");
        write_atomic(&p, b"old contents that are longer", 0o600).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the file should be: the rename fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(fs::read(blocked.join("inside")).unwrap(), b"x");
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn missing_corrupt_and_mismatched_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(read(d, "none"), Ok(None));

        let (chain, key) = self_signed(&["a.example"], 2040);
        let (_, other_key) = self_signed(&["a.example"], 2040);
        let (crt, key_path) = paths(d, "s");

        fs::write(&crt, &chain).unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("s.key is missing"), "{e}");

        fs::write(&key_path, &other_key).unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("does not belong"), "{e}");

        fs::write(&key_path, "garbage").unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("the key"), "{e}");

        fs::write(&key_path, &key).unwrap();
        assert!(read(d, "s").unwrap().is_some());

        fs::write(
            &crt,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("not an X.509 certificate"), "{e}");

        fs::write(&crt, "").unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("no certificate"), "{e}");

        fs::write(&crt, &key).unwrap();
        let e = read(d, "s").unwrap_err();
        assert!(e.contains("not a certificate"), "{e}");
    }

    #[test]
    fn the_cache_rereads_only_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut cache = Cache::default();
        assert_eq!(cache.read(d, "s"), Ok(None));
        let (chain, key) = self_signed(&["a.example"], 2040);
        write_pair(d, "s", &chain, &key).unwrap();
        let first = cache.read(d, "s").unwrap().unwrap();
        // Same files: served from the cache even though the entry is poisoned.
        cache.entries.get_mut("s").unwrap().2 = Err("cached".into());
        assert_eq!(cache.read(d, "s"), Err("cached".into()));
        // Replaced (a new inode): read again.
        let (chain2, key2) = self_signed(&["a.example", "b.example"], 2041);
        write_pair(d, "s", &chain2, &key2).unwrap();
        let second = cache.read(d, "s").unwrap().unwrap();
        assert_ne!(first, second);
        assert_eq!(second.names, ["a.example", "b.example"]);
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let info = CertInfo {
            names: vec!["*.example.org".into(), "example.org".into()],
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            serial: "1".into(),
        };
        assert!(info.covers("example.org"));
        assert!(info.covers("A.example.org"));
        assert!(!info.covers("a.b.example.org"));
        assert!(!info.covers("other.org"));
        assert!(!info.covers(".example.org"));
    }
}
