//! `nusactl keys ...` and `nusactl audit ...`: API keys and the audit log,
//! over nusad's admin socket (nusad checks this process's uid).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nusa_admin::{AuditCheckpoint, AuditList, Client, KeyList, KeySecret};
use nusa_auth::{KeyRecord, KeySpec, Limits, Role};

/// The appliance's socket (`server.admin_socket`).
const DEFAULT_SOCKET: &str = "/var/lib/nusa/admin.sock";

#[derive(Debug, Args)]
pub struct Conn {
    /// nusad's admin socket.
    #[arg(long, global = true, env = "NUSA_ADMIN_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl Conn {
    fn client(&self) -> Client {
        Client::new(&self.socket, Duration::from_secs(60))
    }
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: KeysCmd,
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create a key; it is printed once, and stored only as a salted hash.
    Create(KeyFlags),
    /// Every key: name, prefix, role, models, limits, state.
    List,
    /// One key's record.
    Show { name: String },
    /// Revoke a key now.
    Revoke { name: String },
    /// A new secret for a key (printed once); the old one stops working.
    Rotate { name: String },
    /// Change a key's role, models, limits, expiry or residency (the
    /// secret stays); the flags replace the key's settings.
    Update(KeyFlags),
    /// Print a new key's text, made here (no nusad involved), for a box's
    /// provisioned keys (`auth.bootstrap_keys`, `image/build --keys`).
    Generate,
}

#[derive(Debug, Args)]
struct KeyFlags {
    name: String,
    /// `infer` or `admin` (admin keys may also call the admin API on the
    /// public port).
    #[arg(long, default_value = "infer")]
    role: String,
    /// Models the key may call (globs, repeatable); default every model.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Unix seconds at which the key stops working.
    #[arg(long)]
    expires_at: Option<u64>,
    /// Requests per second (GCRA), with `--burst`.
    #[arg(long)]
    rps: Option<f64>,
    #[arg(long)]
    burst: Option<u32>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrent: Option<u32>,
    /// Requests per UTC day.
    #[arg(long)]
    daily_requests: Option<u64>,
    /// Bytes spilled to regions per UTC day.
    #[arg(long)]
    daily_spill_bytes: Option<u64>,
    /// Limits of the key's calls to one model, beside the key's own:
    /// `MODEL:rps=10,burst=20,max_concurrent=2,daily_requests=1000,daily_spill_bytes=N`
    /// (repeatable; any subset of the five).
    #[arg(long = "model-limit", value_name = "MODEL:LIMITS")]
    model_limits: Vec<String>,
    /// Where the key's requests may be processed: `any`, `local`, or
    /// country codes (repeatable).
    #[arg(long = "residency")]
    residency: Vec<String>,
    /// Never send the key's requests to a region.
    #[arg(long)]
    no_spill: bool,
    /// The subject of a client certificate that authenticates as this key
    /// (`CN=camera-7, O=Acme`).
    #[arg(long)]
    cert_subject: Option<String>,
}

impl KeyFlags {
    fn spec(&self) -> anyhow::Result<KeySpec> {
        let role = match self.role.as_str() {
            "infer" => Role::Infer,
            "admin" => Role::Admin,
            other => anyhow::bail!("--role {other}: expected infer or admin"),
        };
        let mut spec = KeySpec::new(self.name.clone(), role);
        if !self.models.is_empty() {
            spec.models = self.models.clone();
        }
        if !self.residency.is_empty() {
            spec.residency = self.residency.clone();
        }
        spec.expires_at = self.expires_at;
        spec.spill = !self.no_spill;
        spec.cert_subject = self.cert_subject.clone();
        spec.limits = Limits {
            rps: self.rps,
            burst: self.burst,
            max_concurrent: self.max_concurrent,
            daily_requests: self.daily_requests,
            daily_spill_bytes: self.daily_spill_bytes,
        };
        for text in &self.model_limits {
            let (model, limits) = model_limit(text)?;
            if spec.model_limits.insert(model.clone(), limits).is_some() {
                anyhow::bail!("--model-limit {text}: model '{model}' is given twice");
            }
        }
        Ok(spec)
    }
}

/// `MODEL:rps=10,burst=20,...` of `--model-limit`.
fn model_limit(text: &str) -> anyhow::Result<(String, Limits)> {
    let bad = |why: String| anyhow::anyhow!("--model-limit {text}: {why}");
    let (model, list) = text
        .split_once(':')
        .ok_or_else(|| bad("expected MODEL:name=value,... (e.g. resnet:rps=10,burst=20)".into()))?;
    if model.is_empty() {
        return Err(bad("no model name before ':'".into()));
    }
    let mut l = Limits::default();
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("'{item}' is not name=value")))?;
        let int = |v: &str| -> anyhow::Result<u64> {
            v.parse()
                .map_err(|_| bad(format!("{name}={v}: not a whole number")))
        };
        match name {
            "rps" => {
                l.rps = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("rps={value}: not a number")))?,
                )
            }
            "burst" => l.burst = Some(u32::try_from(int(value)?).map_err(|_| bad("burst too large".into()))?),
            "max_concurrent" => {
                l.max_concurrent = Some(
                    u32::try_from(int(value)?).map_err(|_| bad("max_concurrent too large".into()))?,
                )
            }
            "daily_requests" => l.daily_requests = Some(int(value)?),
            "daily_spill_bytes" => l.daily_spill_bytes = Some(int(value)?),
            other => {
                return Err(bad(format!(
                    "unknown limit '{other}' (rps, burst, max_concurrent, daily_requests, daily_spill_bytes)"
                )))
            }
        }
    }
    if l == Limits::default() {
        return Err(bad("no limit given".into()));
    }
    Ok((model.to_string(), l))
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let client = args.conn.client();
    let json = args.conn.json;
    match args.cmd {
        KeysCmd::Generate => {
            let key = nusa_auth::generate_text()
                .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
            println!("{}", key.expose());
            Ok(())
        }
        KeysCmd::Create(f) => {
            let r: KeySecret = client
                .post(nusa_admin::KEYS, &f.spec()?)
                .await
                .with_context(|| format!("creating key '{}'", f.name))?;
            print_secret(&r, json)
        }
        KeysCmd::Rotate { name } => {
            let r: KeySecret = client
                .post(&nusa_admin::key_rotate_path(&name), &serde_json::json!({}))
                .await
                .with_context(|| format!("rotating key '{name}'"))?;
            print_secret(&r, json)
        }
        KeysCmd::List => {
            let r: KeyList = client.get(nusa_admin::KEYS).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{:<24} {:<9} {:<6} {:<9} {:<24} LIMITS",
                "NAME", "PREFIX", "ROLE", "STATE", "MODELS"
            );
            for k in &r.keys {
                println!(
                    "{:<24} {:<9} {:<6} {:<9} {:<24} {}",
                    k.name,
                    k.id,
                    role(k),
                    state(k),
                    k.models.join(","),
                    std::iter::once(limits(&k.limits))
                        .chain(
                            k.model_limits
                                .iter()
                                .map(|(m, l)| format!("{m}: {}", limits(l)))
                        )
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            Ok(())
        }
        KeysCmd::Show { name } => {
            let k: KeyRecord = client.get(&nusa_admin::key_path(&name)).await?;
            print_json(&k)
        }
        KeysCmd::Revoke { name } => {
            let k: KeyRecord = client
                .post(&nusa_admin::key_revoke_path(&name), &serde_json::json!({}))
                .await
                .with_context(|| format!("revoking key '{name}'"))?;
            if json {
                return print_json(&k);
            }
            println!("key '{}' ({}) revoked", k.name, k.id);
            Ok(())
        }
        KeysCmd::Update(f) => {
            let k: KeyRecord = client
                .post(&nusa_admin::key_path(&f.name), &f.spec()?)
                .await
                .with_context(|| format!("changing key '{}'", f.name))?;
            if json {
                return print_json(&k);
            }
            println!("key '{}' ({}) changed", k.name, k.id);
            Ok(())
        }
    }
}

fn print_secret(r: &KeySecret, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    println!("{}", r.secret);
    eprintln!(
        "key '{}' ({}, role {}): shown once, stored only as a hash; send it as 'Authorization: Bearer <key>' or 'x-api-key'",
        r.key.name,
        r.key.id,
        role(&r.key)
    );
    Ok(())
}

fn role(k: &KeyRecord) -> &'static str {
    if k.is_admin() {
        "admin"
    } else {
        "infer"
    }
}

fn state(k: &KeyRecord) -> &'static str {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if k.is_revoked() {
        "revoked"
    } else if k.is_expired(now) {
        "expired"
    } else {
        "active"
    }
}

fn limits(l: &Limits) -> String {
    let mut out = Vec::new();
    if let Some(r) = l.rps {
        out.push(format!(
            "{r} rps (burst {})",
            l.effective_burst().unwrap_or(1)
        ));
    }
    if let Some(c) = l.max_concurrent {
        out.push(format!("{c} at once"));
    }
    if let Some(d) = l.daily_requests {
        out.push(format!("{d}/day"));
    }
    if let Some(b) = l.daily_spill_bytes {
        out.push(format!("{b} spill bytes/day"));
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: AuditCmd,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// The records, oldest first: who did what, when, and the outcome.
    List {
        /// Only records at or after this: Unix seconds, or an age like
        /// `24h`, `30m`, `7d`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Check the chain (against the box's checkpoints, and those given
    /// with --checkpoint): names every edited, removed, reordered or
    /// truncated record. Exits 1 if any.
    Verify {
        /// A file of checkpoints kept off the box (JSON lines, as
        /// `checkpoint` printed them); each must carry this box's signature.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Sign the head now; keep the printed checkpoint off the box.
    Checkpoint,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let client = args.conn.client();
    let json = args.conn.json;
    match args.cmd {
        AuditCmd::List { since, limit } => {
            let mut path = format!("{}?limit={limit}", nusa_admin::AUDIT);
            if let Some(s) = since {
                path.push_str(&format!("&since={}", since_unix(&s)?));
            }
            let r: AuditList = client.get(&path).await?;
            if json {
                return print_json(&r);
            }
            for rec in &r.records {
                println!("{rec}");
            }
            Ok(())
        }
        AuditCmd::Verify { checkpoint } => {
            let r: nusa_audit::VerifyReport = match checkpoint {
                None => client.get(nusa_admin::AUDIT_VERIFY).await?,
                Some(path) => {
                    let text = read_small(&path)?;
                    let checkpoints = text
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(serde_json::from_str)
                        .collect::<Result<Vec<nusa_audit::Checkpoint>, _>>()
                        .with_context(|| format!("{}: not checkpoint lines", path.display()))?;
                    client
                        .post(
                            nusa_admin::AUDIT_VERIFY,
                            &nusa_admin::AuditVerify { checkpoints },
                        )
                        .await?
                }
            };
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "{} records, head {}",
                    r.records,
                    r.head
                        .as_ref()
                        .map_or_else(|| "-".into(), |(seq, h)| format!("seq {seq} {h}"))
                );
                for p in &r.problems {
                    println!("{p}");
                }
            }
            anyhow::ensure!(
                r.ok(),
                "the audit log does not verify: {} problem(s)",
                r.problems.len()
            );
            if !json {
                println!("ok");
            }
            Ok(())
        }
        AuditCmd::Checkpoint => {
            let r: AuditCheckpoint = client
                .post(nusa_admin::AUDIT_CHECKPOINT, &serde_json::json!({}))
                .await?;
            if json {
                return print_json(&r);
            }
            println!("{}", serde_json::to_string(&r.checkpoint)?);
            eprintln!(
                "checkpoint of seq {} signed by key {} (public key {}): keep this line off the box",
                r.checkpoint.seq, r.checkpoint.key_id, r.public_key
            );
            Ok(())
        }
    }
}

/// A checkpoint file: small (1 MiB at most).
fn read_small(path: &std::path::Path) -> anyhow::Result<String> {
    nusa_fsutil::read_to_string_bounded(path, 1 << 20)
        .map_err(|e| anyhow::anyhow!("reading {}: {}", path.display(), e.detail()))
}

/// `--since`: Unix seconds, or an age (`90s`, `30m`, `24h`, `7d`).
fn since_unix(s: &str) -> anyhow::Result<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--since {s}: Unix seconds or an age like 24h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--since {s}: the age's unit is s, m, h or d"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(now.saturating_sub(secs))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    conn: Conn,
    /// How far back: hours or days (`24h`, `7d`).
    #[arg(long, default_value = "24h")]
    since: String,
    /// Group by `key`, `model`, `version`, `region`, `place` or
    /// `jurisdiction` (`local`, or the answering region's country).
    #[arg(long, default_value = "model")]
    by: String,
}

/// `nusactl cost`: requests, compute, bytes and money by group, with the
/// totals and today's budgets.
pub async fn cost(args: CostArgs) -> anyhow::Result<()> {
    let path = format!("{}?since={}&by={}", nusa_admin::COST, args.since, args.by);
    let r: nusa_cost::Report = args.conn.client().get(&path).await?;
    if args.conn.json {
        return print_json(&r);
    }
    println!(
        "{:<32} {:>10} {:>12} {:>12} {:>12} {:>9} {:>12}  JURISDICTIONS",
        format!("{:?}", r.by).to_uppercase(),
        "REQUESTS",
        "COMPUTE S",
        "BYTES IN",
        "BYTES OUT",
        "REGION",
        r.currency
    );
    let line = |group: &str, t: &nusa_cost::Totals| {
        let places: Vec<String> = t
            .jurisdictions
            .iter()
            .map(|(j, n)| format!("{j}:{n}"))
            .collect();
        println!(
            "{:<32} {:>10} {:>12.3} {:>12} {:>12} {:>9} {:>12.6}  {}",
            group,
            t.requests,
            t.compute_s,
            t.bytes_in,
            t.bytes_out,
            t.region_requests,
            t.cost,
            places.join(" ")
        );
    };
    for row in &r.rows {
        line(&row.group, &row.totals);
    }
    line("TOTAL", &r.totals);
    for b in &r.budgets {
        println!(
            "budget {:?}: {:.6} of {:.6} {} today ({:.0}%, {:?}){}",
            b.scope,
            b.spent,
            b.daily,
            r.currency,
            b.ratio * 100.0,
            b.action,
            if b.spill_stopped {
                ": spilling stopped"
            } else {
                ""
            }
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: CacheCmd,
}

#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Empty the edge cache (memory and disk): answers are computed again.
    Purge,
}

pub async fn cache(args: CacheArgs) -> anyhow::Result<()> {
    match args.cmd {
        CacheCmd::Purge => {
            let r: serde_json::Value = args
                .conn
                .client()
                .post(nusa_admin::CACHE_PURGE, &serde_json::json!({}))
                .await
                .context("purging the edge cache")?;
            if args.conn.json {
                return print_json(&r);
            }
            println!("edge cache purged");
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Read nusad's config file again (as SIGHUP does): applies what can
    /// change while it runs, names what needs a restart; a bad file is
    /// refused and nothing changes. Recorded in the audit log.
    Reload,
}

pub async fn config(args: ConfigArgs) -> anyhow::Result<()> {
    match args.cmd {
        ConfigCmd::Reload => {
            let r: nusa_admin::ReloadReply = args
                .conn
                .client()
                .post(nusa_admin::CONFIG_RELOAD, &serde_json::json!({}))
                .await
                .context("reloading nusad's configuration")?;
            if args.conn.json {
                return print_json(&r);
            }
            let list = |v: &[String]| {
                if v.is_empty() {
                    "nothing".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!("{} reloaded; applied: {}", r.file, list(&r.applied));
            if !r.restart_needed.is_empty() {
                println!(
                    "changed but read only at start (restart nusad to apply): {}",
                    list(&r.restart_needed)
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_limits_parse_and_bad_ones_say_why() {
        let (m, l) = model_limit("resnet50:rps=2.5,burst=5,max_concurrent=2").unwrap();
        assert_eq!(m, "resnet50");
        assert_eq!(
            l,
            Limits {
                rps: Some(2.5),
                burst: Some(5),
                max_concurrent: Some(2),
                ..Limits::default()
            }
        );
        let (_, l) = model_limit("bert:daily_requests=10,daily_spill_bytes=1000").unwrap();
        assert_eq!(
            (l.daily_requests, l.daily_spill_bytes),
            (Some(10), Some(1000))
        );
        for (bad, why) in [
            ("bert", "expected MODEL:"),
            (":rps=1", "no model name"),
            ("bert:", "no limit given"),
            ("bert:rps", "not name=value"),
            ("bert:rps=fast", "not a number"),
            ("bert:burst=-1", "not a whole number"),
            ("bert:qps=1", "unknown limit 'qps'"),
        ] {
            let e = model_limit(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
