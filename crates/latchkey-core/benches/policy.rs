//! Conditional-access evaluation throughput: 10,000 users × 200 policies.
//! `cargo bench -p latchkey-core --bench policy` prints evaluations per second
//! (figures in docs/performance-policy.md).

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use latchkey_core::policy::*;
use latchkey_core::replay::UserProfile;
use latchkey_core::Role;

const USERS: usize = 10_000;
const POLICIES: usize = 200;

fn policy_set() -> PolicySet {
    let named_locations = (0..20)
        .map(|i| NamedLocation {
            name: format!("site{i}"),
            ranges: vec![format!("10.{i}.0.0/16").parse().unwrap()],
            trusted: i % 2 == 0,
        })
        .collect();
    let policies = (0..POLICIES)
        .map(|i| {
            let mut a = Assignments::default();
            match i % 4 {
                0 => a.groups.include = vec![format!("g{}", i % 50)],
                1 => a.roles.include = vec![Role::ALL[i % 4]],
                2 => a.departments.include = vec![format!("dept{}", i % 10)],
                _ => a.users.include = vec![ALL.into()],
            }
            a.users.exclude = vec![format!("user{i}")];
            a.applications.include = vec![if i % 3 == 0 {
                ALL.into()
            } else {
                format!("app{}", i % 7)
            }];
            let mut c = Conditions::default();
            match i % 5 {
                0 => {
                    c.locations = Some(IncludeExclude {
                        include: vec![ALL.into()],
                        exclude: vec!["trusted".into()],
                    })
                }
                1 => c.sign_in_risk = vec![RiskLevel::Medium, RiskLevel::High],
                2 => {
                    c.devices = Some(DeviceCondition {
                        compliant: Some(false),
                        ..Default::default()
                    })
                }
                _ => {}
            }
            let grant = match i % 6 {
                0 => vec![GrantControl::RequireStrength("phishing_resistant".into())],
                1 => vec![GrantControl::RequireCompliantDevice],
                2 if i % 12 == 2 => vec![GrantControl::Block],
                _ => vec![GrantControl::RequireStrength("mfa".into())],
            };
            ConditionalAccessPolicy {
                id: format!("p{i:03}"),
                name: format!("policy {i}"),
                state: if i % 10 == 9 {
                    PolicyState::ReportOnly
                } else {
                    PolicyState::Enabled
                },
                assignments: a,
                conditions: c,
                grant,
                session: SessionControls::default(),
            }
        })
        .collect();
    PolicySet {
        policies,
        named_locations,
        strengths: vec![],
    }
    .validated()
    .unwrap()
}

fn main() {
    let set = policy_set();
    let users: Vec<UserProfile> = (0..USERS)
        .map(|i| UserProfile {
            username: format!("user{i}"),
            groups: vec![format!("g{}", i % 50), format!("g{}", (i / 50) % 50)],
            roles: if i % 100 == 0 { vec![Role::Admin] } else { vec![] },
            department: Some(format!("dept{}", i % 10)),
            break_glass: false,
        })
        .collect();
    let exceptions: Vec<PolicyException> = (0..100)
        .map(|i| PolicyException {
            id: format!("e{i}"),
            policy_id: format!("p{:03}", i * 2),
            subject: ExceptionSubject::User(format!("user{}", i * 97)),
            expires_at: if i % 2 == 0 { 2_000_000_000 } else { 1 },
        })
        .collect();
    let contexts: Vec<AccessContext> = (0..64)
        .map(|i| AccessContext {
            application: Some(format!("app{}", i % 7)),
            action: None,
            ip: Some(IpAddr::from([if i % 2 == 0 { 10 } else { 192 }, (i % 20) as u8, 1, 2])),
            device: None,
            risk: [RiskLevel::None, RiskLevel::Low, RiskLevel::High][i % 3],
        })
        .collect();
    let now = 1_800_000_000;
    // Warm up, then measure full passes over every user.
    let mut applied = 0usize;
    for (i, u) in users.iter().take(1000).enumerate() {
        applied += evaluate(&set, &exceptions, &u.facts(), &contexts[i % 64], now)
            .applied
            .len();
    }
    let passes = 3;
    let start = Instant::now();
    for pass in 0..passes {
        for (i, u) in users.iter().enumerate() {
            let d = evaluate(
                &set,
                &exceptions,
                &u.facts(),
                black_box(&contexts[(i + pass) % 64]),
                now,
            );
            applied += black_box(d).applied.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let evals = (passes * USERS) as f64;
    println!(
        "policy evaluation: {USERS} users x {POLICIES} policies: {evals} evaluations in {secs:.3} s = {:.0} evaluations/s ({:.1} us each, {:.0} policy checks/s); {applied} policies applied",
        evals / secs,
        secs / evals * 1e6,
        evals * POLICIES as f64 / secs
    );
}
