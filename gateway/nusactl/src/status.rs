//! `nusactl status`: the box at a glance over nusad's admin socket, the
//! same data as the status page (`/status` on the metrics listener).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use nusa_admin::{Client, Overview};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// nusad's admin socket.
    #[arg(long, env = "NUSA_ADMIN_SOCKET", default_value = crate::models::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print nusad's JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How long to wait for nusad, seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.socket, Duration::from_secs(args.timeout));
    if args.json {
        let v: serde_json::Value = client.get(nusa_admin::STATUS).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let o: Overview = client.get(nusa_admin::STATUS).await?;
    print!("{}", render(&o));
    Ok(())
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", s % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// One screen of text.
pub(crate) fn render(o: &Overview) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nusad {}  slot {}  up {}  {}",
        o.version,
        o.slot.as_deref().unwrap_or("unknown"),
        uptime(o.uptime_s),
        if o.ready { "ready" } else { "NOT READY" }
    );
    let _ = writeln!(out, "\nmodels ({}):", o.models.mode);
    if o.models.models.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for m in &o.models.models {
        let queue = o
            .queues
            .iter()
            .find(|q| q.model == m.name)
            .map_or(0, |q| q.depth);
        let versions: Vec<String> = m
            .versions
            .iter()
            .map(|v| format!("{} ({})", v.version, v.engine))
            .collect();
        let mut line = format!(
            "  {:<20} {:<11} serving {}",
            m.name,
            m.state,
            m.serving.map_or_else(|| "-".into(), |v| v.to_string())
        );
        if m.pinned.is_some() {
            line.push_str(" (pinned)");
        }
        if let Some(c) = m.canary {
            let _ = write!(line, " + canary {c}");
        }
        let _ = write!(line, "  versions {}  queue {queue}", versions.join(", "));
        if let Some(e) = &m.error {
            let _ = write!(line, "  error: {e}");
        }
        let _ = writeln!(out, "{line}");
    }
    for r in &o.rollouts {
        if let Some(run) = &r.running {
            let _ = writeln!(
                out,
                "  rollout {}: version {} at {}% (step {} of {}, {:?})",
                r.model,
                run.candidate,
                run.percent,
                run.step + 1,
                run.steps.len(),
                run.phase
            );
        } else if let Some(last) = &r.last {
            let _ = writeln!(
                out,
                "  rollout {}: last of version {} {}{}",
                r.model,
                last.candidate,
                last.result,
                last.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    for d in &o.drift {
        let drifted: Vec<String> = d
            .tensors
            .iter()
            .filter(|t| t.drifted)
            .map(|t| t.name.clone())
            .collect();
        let top = d
            .tensors
            .iter()
            .filter_map(|t| t.psi.map(|p| (p, t.name.as_str())))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let _ = writeln!(
            out,
            "  drift {} {}: {:?}, {} sampled, highest psi {}{}",
            d.model,
            d.version,
            d.phase,
            d.samples,
            top.map_or_else(|| "-".into(), |(p, n)| format!("{p:.3} ({n})")),
            if drifted.is_empty() {
                String::new()
            } else {
                format!("  DRIFTED: {}", drifted.join(", "))
            }
        );
    }
    let c = &o.cache;
    if c.enabled {
        let _ = writeln!(
            out,
            "\ncache: hit ratio {}  ({} hits, {} misses, {} coalesced)",
            pct(c.hit_ratio),
            c.hits,
            c.misses,
            c.coalesced
        );
    } else {
        let _ = writeln!(out, "\ncache: off");
    }
    let _ = writeln!(
        out,
        "requests: {}  spill share {} ({} spilled)",
        if o.requests.by_outcome.is_empty() {
            "none yet".to_string()
        } else {
            o.requests
                .by_outcome
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        pct(o.requests.spill_share),
        o.requests.spilled
    );
    if !o.regions.is_empty() {
        let _ = writeln!(out, "\nregions:");
        for r in &o.regions {
            let _ = writeln!(
                out,
                "  {:<20} probe {:<14} breaker {:<9} rtt {:<9} spilled {}",
                r.name,
                r.probe,
                r.breaker,
                r.rtt_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
                r.spilled
            );
        }
    }
    let u = &o.update;
    let _ = writeln!(
        out,
        "\nupdate: {}",
        match (&u.state, &u.step) {
            (None, _) => "no updater report".to_string(),
            (Some(s), Some(step)) => format!(
                "{s} ({step} {} of {} bytes)",
                u.done_bytes.unwrap_or(0),
                u.total_bytes.unwrap_or(0)
            ),
            (Some(s), None) => s.clone(),
        }
    );
    if !o.errors.is_empty() {
        let _ = writeln!(out, "\nrecent warnings and errors (newest last):");
        // One screen: the last few.
        let skip = o.errors.len().saturating_sub(8);
        for e in o.errors.iter().skip(skip) {
            let _ = writeln!(
                out,
                "  {} {:<5} {}: {}",
                e.time_s, e.level, e.target, e.text
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nusa_admin::{CacheSummary, RegionSummary, RequestSummary};

    #[test]
    fn one_screen_names_each_part() {
        let o = Overview {
            version: "0.1.0".into(),
            slot: Some("b".into()),
            uptime_s: 3725,
            ready: true,
            cache: CacheSummary {
                enabled: true,
                hits: 3,
                misses: 1,
                hit_ratio: Some(0.75),
                ..CacheSummary::default()
            },
            regions: vec![RegionSummary {
                name: "sg".into(),
                probe: "tls".into(),
                breaker: "open".into(),
                rtt_ms: None,
                spilled: 2,
            }],
            requests: RequestSummary {
                by_outcome: vec![("ok".into(), 4)],
                spilled: 2,
                spill_share: Some(0.5),
            },
            ..Overview::default()
        };
        let text = render(&o);
        for want in [
            "nusad 0.1.0  slot b  up 1h 2m  ready",
            "hit ratio 75.0%",
            "spill share 50.0% (2 spilled)",
            "sg",
            "probe tls",
            "breaker open",
            "update: no updater report",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
