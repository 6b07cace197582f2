//! `latchkey bench --scenario detections`: throughput and memory of the
//! detections in `latchkey_core::detect` over a synthetic day of sign-in
//! events (default 1,000,000): the per-sign-in ones (unusual location and
//! impossible travel, replayed in order through `PlaceBaseline`) and one
//! pass of the windowed ones (push fatigue, spray, stuffing, failure spike)
//! over the whole day, which is what the engine's housekeeping tick does.
//! Memory is the process's resident set (VmRSS/VmHWM from /proc) before and
//! after building the events and the baseline.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::Result;
use latchkey_core::detect::{self, GeoTable, PlaceBaseline, SignInEvent, Thresholds};
use serde_json::json;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rss_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn geo() -> GeoTable {
    // Eight cities, each a /16 of 10.x, plus the attack range 100.64.0.0/16.
    let cities = [
        (52.52, 13.40, "Berlin"),
        (48.85, 2.35, "Paris"),
        (51.51, -0.13, "London"),
        (40.71, -74.01, "New York"),
        (35.68, 139.69, "Tokyo"),
        (-33.87, 151.21, "Sydney"),
        (37.77, -122.42, "San Francisco"),
        (19.08, 72.88, "Mumbai"),
    ];
    let mut csv = String::from("cidr,latitude,longitude,label\n");
    for (i, (lat, lon, name)) in cities.iter().enumerate() {
        csv.push_str(&format!("10.{i}.0.0/16,{lat},{lon},{name}\n"));
    }
    csv.push_str("100.64.0.0/16,55.75,37.62,Moscow\n");
    GeoTable::parse_csv(&csv).expect("generated CSV parses")
}

/// `n` events over 24 hours ending at `now`: 20,000 users each with a home
/// city and a few home networks; 3 % travel, 4 % wrong passwords, 2 % push
/// events (some denied or timed out), and a spray from one source in the
/// last hour.
fn events(n: usize, now: i64) -> Vec<SignInEvent> {
    let users = 20_000u64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = now - 86_400;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + (i as i64 * 86_400) / n as i64;
        let u = rng.below(users);
        let home = (u % 8) as u8;
        let roll = rng.below(100);
        let (city, net) = if rng.below(100) < 3 {
            (rng.below(8) as u8, rng.below(4) as u8)
        } else {
            (home, (u % 4) as u8)
        };
        let mut ip = IpAddr::V4(Ipv4Addr::new(10, city, net, (u % 250) as u8 + 1));
        let (success, reason, methods): (bool, Option<&str>, Vec<String>) = match roll {
            0..=3 => (false, Some("invalid_credentials"), vec!["password".into()]),
            4 => (
                false,
                Some(["push_denied", "push_timeout"][rng.below(2) as usize]),
                vec!["push".into()],
            ),
            5 => (true, None, vec!["password".into(), "push".into()]),
            _ => (true, None, vec!["password".into(), "totp".into()]),
        };
        // The last hour carries a spray: one source, many users.
        let spray = at > now - 3600 && i % 97 == 0;
        if spray {
            ip = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 23));
        }
        out.push(SignInEvent {
            id: i as i64 + 1,
            at,
            user_id: Some(format!("u{u}")),
            username: format!("user{u}"),
            application: Some(["portal", "mail", "vpn", "crm"][(u % 4) as usize].into()),
            source_ip: Some(ip),
            location: None,
            success: success && !spray,
            reason: if spray { Some("invalid_credentials") } else { reason }.map(str::to_owned),
            methods: if spray { vec!["password".into()] } else { methods },
        });
    }
    out
}

pub fn run(n: usize, json_out: bool) -> Result<()> {
    let now = 1_800_000_000;
    let t = Thresholds::default();
    let g = geo();
    let rss0 = rss_kib("VmRSS:").unwrap_or(0);
    let t0 = Instant::now();
    let ev = events(n, now);
    let gen_secs = t0.elapsed().as_secs_f64();
    let rss_events = rss_kib("VmRSS:").unwrap_or(0);

    // Per-sign-in: every event once, in order.
    let t1 = Instant::now();
    let mut baseline = PlaceBaseline::default();
    let mut per_signin = 0usize;
    for e in &ev {
        per_signin += baseline.observe(e, &g, &t).len();
    }
    let per_secs = t1.elapsed().as_secs_f64();
    let rss_baseline = rss_kib("VmRSS:").unwrap_or(0);

    // Windowed: one pass over the whole day (the engine's lookback).
    let t2 = Instant::now();
    let windowed = detect::windowed(&ev, now, &t);
    let win_secs = t2.elapsed().as_secs_f64();
    let hwm = rss_kib("VmHWM:").unwrap_or(0);

    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for d in &windowed {
        *kinds.entry(d.kind.as_str()).or_default() += 1;
    }
    let report = json!({
        "events": n,
        "generate_secs": gen_secs,
        "per_signin": {
            "secs": per_secs,
            "events_per_sec": n as f64 / per_secs,
            "detections": per_signin,
        },
        "windowed_pass": {
            "secs": win_secs,
            "events_per_sec": n as f64 / win_secs,
            "detections": kinds,
        },
        "memory_kib": {
            "rss_start": rss0,
            "rss_after_events": rss_events,
            "rss_after_baseline": rss_baseline,
            "peak_rss": hwm,
            "events_bytes_each": (rss_events.saturating_sub(rss0) * 1024) as f64 / n as f64,
        },
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("detections over {n} sign-in events (24 h, 20,000 users)");
    println!(
        "  per-sign-in (unusual location + impossible travel): {:>12.0} events/s  ({:.2} s, {per_signin} detections)",
        n as f64 / per_secs,
        per_secs
    );
    println!(
        "  windowed pass (push, spray, stuffing, spike):        {:>12.0} events/s  ({:.2} s, {:?})",
        n as f64 / win_secs,
        win_secs,
        kinds
    );
    println!(
        "  memory: RSS {} MiB at start, {} MiB with the events, {} MiB with the baseline, peak {} MiB",
        rss0 / 1024,
        rss_events / 1024,
        rss_baseline / 1024,
        hwm / 1024
    );
    Ok(())
}

/// The same day of events stored in a fresh SQLite database (logged through
/// the store, as sign-ins log them), then one full run of the server's
/// detection engine (`App::run_detections`) over it.
pub async fn run_with_store(n: usize) -> Result<()> {
    use latchkey_service::app::{App, Config};
    use latchkey_service::clock::ManualClock;
    use latchkey_store::{Keys, SignInDetail, SignInLogEntry, Store};
    use std::sync::Arc;

    let now = 1_800_000_000;
    let dir = std::env::temp_dir().join(format!("latchkey-bench-detect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_sqlite(&dir).await?;
    let mut config = Config::default();
    config.ops.geo = Arc::new(geo());
    let clock = Arc::new(ManualClock::new(now));
    let log = store.clone();
    let app = App::new(store, Keys::from_master(&[1u8; 32]), config, clock)?;
    let ev = events(n, now);
    let t0 = Instant::now();
    for e in &ev {
        let entry = SignInLogEntry {
            at: e.at,
            user_id: e.user_id.clone(),
            username: e.username.clone(),
            application: e.application.clone(),
            source_ip: e.source_ip.map(|i| i.to_string()),
            result: if e.success { "success" } else { "failure" }.into(),
            reason: e.reason.clone(),
            methods: if e.success { e.methods.clone() } else { vec![] },
            acr: None,
        };
        let detail = SignInDetail {
            methods_tried: e.methods.clone(),
            ..Default::default()
        };
        log.log_signin_detailed(&entry, &detail, None).await?;
    }
    let log_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let run = app.run_detections().await?;
    let run_secs = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let again = app.run_detections().await?;
    let tick_secs = t2.elapsed().as_secs_f64();
    println!(
        "store-backed, SQLite: logged {n} sign-ins at {:.0}/s ({log_secs:.1} s); first engine run {run_secs:.1} s \
         ({} sign-ins examined, {} alerts after dedup); a housekeeping tick with nothing new {tick_secs:.2} s ({} alerts); peak RSS {} MiB",
        n as f64 / log_secs,
        run.signins_examined,
        run.raised.len(),
        again.raised.len(),
        rss_kib("VmHWM:").unwrap_or(0) / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
