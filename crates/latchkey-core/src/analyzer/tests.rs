//! The field guide's circular traps, found, then fixed by an enrollment policy.

use super::*;
use crate::model::Role;
use crate::policy::*;
use VerifyMethod::*;

fn all_users(id: &str, apps: &[&str], grant: Vec<GrantControl>) -> ConditionalAccessPolicy {
    ConditionalAccessPolicy {
        id: id.into(),
        name: id.into(),
        state: PolicyState::Enabled,
        assignments: Assignments {
            users: IncludeExclude {
                include: vec![ALL.into()],
                exclude: vec![],
            },
            applications: IncludeExclude {
                include: apps.iter().map(|a| a.to_string()).collect(),
                exclude: vec![],
            },
            ..Default::default()
        },
        conditions: Conditions::default(),
        grant,
        session: SessionControls::default(),
    }
}

/// An enrollment policy: registering security info and device enrollment
/// need a TAP or a hardware key, not a compliant device.
fn enrollment_policy() -> ConditionalAccessPolicy {
    let mut p = all_users(
        "enrollment",
        &[DEVICE_ENROLLMENT_APPLICATION],
        vec![GrantControl::RequireStrength("bootstrap".into())],
    );
    p.assignments.user_actions = vec![UserAction::RegisterSecurityInfo];
    p
}

fn strengths() -> Vec<AuthenticationStrength> {
    vec![
        // "Use the company authenticator app": common, and lost with the phone.
        AuthenticationStrength {
            name: "authenticator_app".into(),
            description: String::new(),
            combinations: vec![vec![Password, Totp], vec![Password, Push]],
            aaguids: None,
        },
        AuthenticationStrength {
            name: "bootstrap".into(),
            description: String::new(),
            combinations: vec![vec![TemporaryAccessPass], vec![Webauthn]],
            aaguids: None,
        },
    ]
}

fn set(policies: Vec<ConditionalAccessPolicy>) -> PolicySet {
    PolicySet {
        policies,
        named_locations: vec![],
        strengths: strengths(),
    }
    .validated()
    .unwrap()
}

fn alice_groups() -> Vec<String> {
    vec!["staff".into()]
}

fn report(s: &PolicySet, methods: Vec<VerifyMethod>, tap: bool) -> UserReport {
    let groups = alice_groups();
    let u = AnalyzedUser {
        facts: UserFacts {
            username: "alice",
            groups: &groups,
            roles: &[],
            department: None,
            break_glass: false,
        },
        methods,
    };
    analyze_user(
        s,
        &[],
        &u,
        &AnalyzerOptions {
            tap_available: tap,
            ..Default::default()
        },
        0,
    )
}

#[test]
fn no_policy_no_lockout() {
    let r = report(&set(vec![]), vec![Password, Totp], true);
    assert!(!r.locked_out, "{r:#?}");
}

#[test]
fn trap_compliant_device_required_to_enroll() {
    let device = all_users("compliant-device", &[ALL], vec![GrantControl::RequireCompliantDevice]);
    let r = report(&set(vec![device.clone()]), vec![Password, Totp], true);
    assert!(r.locked_out);
    let why = r.summary();
    assert!(why.contains("requires a compliant device"), "{why}");
    assert!(why.contains("device enrollment"), "{why}");

    // Fix: enrollment is excluded from the device policy and governed by an
    // enrollment policy that allows a TAP or a hardware key.
    let mut device = device;
    device.assignments.applications.exclude = vec![DEVICE_ENROLLMENT_APPLICATION.into()];
    let r = report(&set(vec![device, enrollment_policy()]), vec![Password, Totp], true);
    assert!(!r.locked_out, "{}", r.summary());
    assert!(r.paths.iter().all(|p| p.via == vec![TemporaryAccessPass]));
}

#[test]
fn trap_authenticator_restore_blocked() {
    let app = all_users(
        "authenticator",
        &[ALL],
        vec![GrantControl::RequireStrength("authenticator_app".into())],
    );
    let r = report(&set(vec![app.clone()]), vec![Password, Totp], true);
    assert!(r.locked_out);
    let lost = r.paths.iter().find(|p| !p.reachable).unwrap();
    assert_eq!(lost.scenario, Scenario::PhoneLost);
    assert!(lost.why.as_deref().unwrap().contains("authenticator_app"), "{lost:?}");
    // With the phone the user is fine; the trap is the restore.
    assert!(r.paths.iter().any(|p| p.scenario == Scenario::Current && p.reachable));

    let r = report(&set(vec![app, enrollment_policy()]), vec![Password, Totp], true);
    assert!(!r.locked_out, "{}", r.summary());
}

#[test]
fn trap_enrollment_after_phone_swap() {
    let mut device = all_users("compliant-device", &[ALL], vec![GrantControl::RequireCompliantDevice]);
    device.assignments.applications.exclude = vec![DEVICE_ENROLLMENT_APPLICATION.into()];
    let portal = all_users(
        "portal",
        &[DEVICE_ENROLLMENT_APPLICATION],
        vec![GrantControl::RequireStrength("authenticator_app".into())],
    );
    let r = report(&set(vec![device.clone(), portal]), vec![Password, Totp], true);
    assert!(r.locked_out);
    let stuck = r
        .paths
        .iter()
        .find(|p| !p.reachable && p.target == Target::DeviceEnrollment)
        .expect("device enrollment is the stuck step");
    assert_eq!(stuck.scenario, Scenario::PhoneLost);

    // Fix with a hardware key and no TAP at all: the enrollment policy allows it.
    let r = report(
        &set(vec![device, enrollment_policy()]),
        vec![Password, Totp, Webauthn],
        false,
    );
    assert!(!r.locked_out, "{}", r.summary());
    assert!(r.paths.iter().all(|p| p.via == vec![Webauthn]));
}

#[test]
fn without_tap_a_user_with_nothing_left_is_locked_out() {
    let r = report(&set(vec![]), vec![Password, Totp], false);
    assert!(r.locked_out);
    assert!(r.summary().contains("no TAP can be issued"), "{}", r.summary());
}

#[test]
fn phishing_resistant_everywhere_still_lets_a_tap_register() {
    let pr = all_users(
        "pr",
        &[ALL],
        vec![GrantControl::RequireStrength("phishing_resistant".into())],
    );
    let r = report(&set(vec![pr]), vec![Password, Totp], true);
    assert!(!r.locked_out, "{}", r.summary());
}

#[test]
fn break_glass_is_never_locked_by_policy_but_needs_a_key() {
    let block = all_users("block", &[ALL], vec![GrantControl::Block]);
    let s = set(vec![block]);
    let groups = vec![];
    let roles = [Role::Admin];
    let bg = AnalyzedUser {
        facts: UserFacts {
            username: "breakglass1",
            groups: &groups,
            roles: &roles,
            department: None,
            break_glass: true,
        },
        methods: vec![Password, Webauthn],
    };
    let normal = AnalyzedUser {
        facts: UserFacts {
            username: "bob",
            groups: &groups,
            roles: &[],
            department: None,
            break_glass: false,
        },
        methods: vec![Password, Totp],
    };
    let rep = analyze(&s, &[], &[bg.clone(), normal], &AnalyzerOptions::default(), 0);
    assert_eq!(rep.locked_usernames(), vec!["bob"]);
    assert!(rep.findings.is_empty());
    let no_key = AnalyzedUser {
        methods: vec![Password, Totp],
        ..bg
    };
    let rep = analyze(&s, &[], &[no_key], &AnalyzerOptions::default(), 0);
    assert!(rep.findings[0].contains("no phishing-resistant key"));
    let none = analyze(&set(vec![]), &[], &[], &AnalyzerOptions::default(), 0);
    assert_eq!(newly_locked(&none, &rep), vec!["breakglass1"]);
}
