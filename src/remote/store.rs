//! The connection to object storage: a remote URL becomes an
//! `object_store` client (S3 from the standard `AWS_*` variables, or a
//! directory for `file://`), driven from synchronous code by a private
//! runtime. Every failure becomes [`Error::Remote`] (or
//! [`Error::NotFound`]) with credentials scrubbed.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};

use crate::error::Error;

/// Objects at least this large are uploaded in parts; smaller ones in one
/// PUT from memory.
pub(super) const MULTIPART_FROM: u64 = 64 << 20;
/// Size of one uploaded part.
const PART: usize = 8 << 20;
/// Parts of one object in flight.
const PARTS_IN_FLIGHT: usize = 4;

/// One object's listing entry.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    /// Path relative to the remote's prefix.
    pub rel: String,
    pub size: u64,
    /// Seconds since the Unix epoch, by the server's clock.
    pub modified: i64,
}

/// A remote: an object store and the prefix bundles live under.
pub(super) struct Store {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The URL as shown to people (never with credentials).
    pub url: String,
    pub runtime: tokio::runtime::Runtime,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `text` with every credential from the environment replaced.
pub(super) fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"] {
        if let Some(secret) = env(name).filter(|s| s.len() >= 4) {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

/// True for an endpoint on this machine (plain HTTP is allowed there).
fn is_loopback(endpoint: &url::Url) -> bool {
    match endpoint.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn client_options(endpoint: Option<&url::Url>) -> Result<ClientOptions, Error> {
    let mut options = ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(300));
    if let Some(e) = endpoint.filter(|e| e.scheme() == "http") {
        let allowed = env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true")) || is_loopback(e);
        if !allowed {
            let detail = format!("endpoint {e} is plain HTTP; use HTTPS, or set AWS_ALLOW_HTTP=true to allow it");
            return Err(Error::InvalidInput { what: "remote", detail });
        }
        options = options.with_allow_http(true);
    }
    Ok(options)
}

fn retry() -> RetryConfig {
    RetryConfig { max_retries: 4, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() }
}

impl Store {
    /// Connects to `url`: `s3://bucket[/prefix]` or `file:///path`.
    pub(super) fn open(url: &str) -> Result<Self, Error> {
        let bad = |detail: String| Error::InvalidInput { what: "remote", detail };
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        let prefix = parsed.path().trim_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| bad(format!("{url}: no bucket")))?;
                let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"));
                let endpoint =
                    endpoint.map(|e| url::Url::parse(&e).map_err(|err| bad(format!("AWS_ENDPOINT_URL {e:?}: {err}")))).transpose()?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(client_options(endpoint.as_ref())?)
                    .with_retry(retry());
                if let Some(e) = &endpoint {
                    builder = builder.with_endpoint(e.as_str().trim_end_matches('/'));
                }
                if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
                    builder = builder.with_region(region);
                }
                Arc::new(builder.build().map_err(|e| bad(scrub(&e.to_string())))?)
            }
            "file" => {
                let root = parsed.to_file_path().map_err(|_| bad(format!("{url}: not a local path")))?;
                std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
                Arc::new(LocalFileSystem::new_with_prefix(&root).map_err(|e| bad(e.to_string()))?)
            }
            other => return Err(bad(format!("{url}: unsupported scheme {other:?}; use s3:// or file://"))),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("<async runtime>", e))?;
        let prefix = if parsed.scheme() == "file" { String::new() } else { prefix };
        Ok(Store { store, prefix, url: url.trim_end_matches('/').to_string(), runtime })
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn rel(&self, key: &Key) -> String {
        let k = key.as_ref();
        match self.prefix.is_empty() {
            true => k.to_string(),
            false => k.strip_prefix(&self.prefix).map_or(k, |r| r.trim_start_matches('/')).to_string(),
        }
    }

    /// The error for a failed request on `rel`.
    pub(super) fn fail(&self, rel: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { file: format!("{}/{rel}", self.url) },
            other => Error::Remote { location: format!("{}/{rel}", self.url), detail: scrub(&other.to_string()) },
        }
    }

    /// The whole object, which must be at most `max` bytes: a hostile or
    /// broken remote cannot make a reader allocate more than it expects.
    pub(super) async fn get(&self, rel: &str, max: u64) -> Result<Vec<u8>, Error> {
        let got = self.store.get(&self.key(rel)).await.map_err(|e| self.fail(rel, e))?;
        let location = format!("{}/{rel}", self.url);
        if got.meta.size > max {
            return Err(Error::limit(&location, "object size", max, got.meta.size));
        }
        let mut out = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail(rel, e))?;
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(Error::limit(&location, "object size", max, out.len() as u64 + chunk.len() as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Bytes `range` of the object.
    pub(super) async fn get_range(&self, rel: &str, range: Range<u64>) -> Result<bytes::Bytes, Error> {
        self.store.get_range(&self.key(rel), range).await.map_err(|e| self.fail(rel, e))
    }

    /// The object's size, or `None` if it does not exist.
    pub(super) async fn head(&self, rel: &str) -> Result<Option<u64>, Error> {
        match self.store.head(&self.key(rel)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Streams the object into `out`, chunk by chunk.
    pub(super) async fn download(&self, rel: &str, out: &mut (impl std::io::Write + ?Sized), name: &str) -> Result<u64, Error> {
        let got = self.store.get(&self.key(rel)).await.map_err(|e| self.fail(rel, e))?;
        let mut stream = got.into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail(rel, e))?;
            out.write_all(&chunk).map_err(|e| Error::output(name, e))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Stores `bytes` at `rel`.
    pub(super) async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.store.put(&self.key(rel), PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| self.fail(rel, e))
    }

    /// Uploads the local file `path` to `rel` (in parts when large).
    /// `sent` is told of every chunk uploaded.
    pub(super) async fn upload(&self, rel: &str, path: &std::path::Path, sent: &(dyn Fn(u64) + Sync)) -> Result<(), Error> {
        use std::io::Read;
        let name = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size < MULTIPART_FROM {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
            self.put(rel, bytes).await?;
            sent(size);
            return Ok(());
        }
        let upload = self.store.put_multipart(&self.key(rel)).await.map_err(|e| self.fail(rel, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; PART];
        loop {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| self.fail(rel, e))?;
            let n = file.read(&mut buf).map_err(|e| Error::io(&name, e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
            sent(n as u64);
        }
        writer.finish().await.map(|_| ()).map_err(|e| self.fail(rel, e))
    }

    /// Removes the object (absent is fine).
    pub(super) async fn delete(&self, rel: &str) -> Result<(), Error> {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Rewrites `rel` with `body` every `every`, until the task is aborted.
    /// The task stops when `stop` fires (or its sender is dropped), never in
    /// the middle of a write: once the task has finished, no rewrite of
    /// `rel` is in flight, so deleting it then cannot be undone by a late write.
    pub(super) fn spawn_refresh(
        &self,
        rel: &str,
        body: Vec<u8>,
        every: Duration,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let (store, key) = (Arc::clone(&self.store), self.key(rel));
        self.runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut stop => return,
                }
                let _ = store.put(&key, PutPayload::from(body.clone())).await;
            }
        })
    }

    /// Every object under `dir` (relative to the prefix), recursively.
    pub(super) async fn list(&self, dir: &str) -> Result<Vec<Meta>, Error> {
        let prefix = self.key(dir);
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.fail(dir, e))?;
            out.push(Meta { rel: self.rel(&meta.location), size: meta.size, modified: meta.last_modified.timestamp() });
        }
        Ok(out)
    }

    /// The names directly under `dir` that are themselves directories.
    pub(super) async fn subdirs(&self, dir: &str) -> Result<Vec<String>, Error> {
        let listed = self.store.list_with_delimiter(Some(&self.key(dir))).await.map_err(|e| self.fail(dir, e))?;
        Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }
}
