//! Table-driven tests of conditional-access evaluation.

use super::*;
use VerifyMethod::*;

fn set(policies: Vec<ConditionalAccessPolicy>) -> PolicySet {
    PolicySet {
        policies,
        named_locations: vec![
            NamedLocation {
                name: "office".into(),
                ranges: vec!["10.0.0.0/8".parse().unwrap()],
                trusted: true,
            },
            NamedLocation {
                name: "sanctioned".into(),
                ranges: vec!["203.0.113.0/24".parse().unwrap()],
                trusted: false,
            },
        ],
        strengths: vec![AuthenticationStrength {
            name: "fido_yubikey".into(),
            description: String::new(),
            combinations: vec![vec![Webauthn]],
            aaguids: Some(vec!["cb69481e-8ff7-4039-93ec-0a2729a154a8".into()]),
        }],
    }
    .validated()
    .expect("valid policy set")
}

fn policy(id: &str, grant: Vec<GrantControl>) -> ConditionalAccessPolicy {
    ConditionalAccessPolicy {
        id: id.into(),
        name: format!("policy {id}"),
        state: PolicyState::Enabled,
        assignments: Assignments {
            users: IncludeExclude {
                include: vec![ALL.into()],
                exclude: vec![],
            },
            applications: IncludeExclude {
                include: vec![ALL.into()],
                exclude: vec![],
            },
            ..Default::default()
        },
        conditions: Conditions::default(),
        grant,
        session: SessionControls::default(),
    }
}

fn strength(name: &str) -> GrantControl {
    GrantControl::RequireStrength(name.into())
}

struct U {
    name: &'static str,
    groups: Vec<String>,
    roles: Vec<Role>,
    department: Option<&'static str>,
    break_glass: bool,
}

fn user(name: &'static str) -> U {
    U {
        name,
        groups: vec!["staff".into()],
        roles: vec![],
        department: None,
        break_glass: false,
    }
}

fn admin() -> U {
    U {
        name: "root",
        groups: vec!["it".into()],
        roles: vec![Role::Admin],
        department: None,
        break_glass: false,
    }
}

impl U {
    fn facts(&self) -> UserFacts<'_> {
        UserFacts {
            username: self.name,
            groups: &self.groups,
            roles: &self.roles,
            department: self.department,
            break_glass: self.break_glass,
        }
    }
}

fn ctx() -> AccessContext {
    AccessContext::default()
}

fn device(compliant: bool, managed: bool, ownership: Option<Ownership>, platform: Option<Platform>) -> DevicePosture {
    DevicePosture {
        id: "dev-1".into(),
        platform,
        ownership,
        managed,
        compliant,
    }
}

fn eval(p: ConditionalAccessPolicy, u: &U, c: &AccessContext) -> Decision {
    evaluate(&set(vec![p]), &[], &u.facts(), c, 1_000)
}

/// (case, policy, user, context, applies?)
#[test]
fn each_assignment_and_condition_decides_whether_a_policy_applies() {
    let block = || policy("p", vec![GrantControl::Block]);
    let with = |f: &dyn Fn(&mut ConditionalAccessPolicy)| {
        let mut p = block();
        f(&mut p);
        p
    };
    let at = |ip: &str| AccessContext {
        ip: Some(ip.parse().unwrap()),
        ..ctx()
    };
    let on = |d: DevicePosture| AccessContext {
        device: Some(d),
        ..ctx()
    };
    let risk = |r: RiskLevel| AccessContext { risk: r, ..ctx() };
    let app = |a: &str| AccessContext {
        application: Some(a.into()),
        ..ctx()
    };
    let cases: Vec<(&str, ConditionalAccessPolicy, U, AccessContext, bool)> = vec![
        ("all users", block(), user("alice"), ctx(), true),
        (
            "named user",
            with(&|p| p.assignments.users.include = vec!["alice".into()]),
            user("alice"),
            ctx(),
            true,
        ),
        (
            "other user",
            with(&|p| p.assignments.users.include = vec!["bob".into()]),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "group included",
            with(&|p| {
                p.assignments.users.include = vec![];
                p.assignments.groups.include = vec!["staff".into()];
            }),
            user("alice"),
            ctx(),
            true,
        ),
        (
            "role included",
            with(&|p| {
                p.assignments.users.include = vec![];
                p.assignments.roles.include = vec![Role::Admin];
            }),
            admin(),
            ctx(),
            true,
        ),
        (
            "department included",
            with(&|p| {
                p.assignments.users.include = vec![];
                p.assignments.departments.include = vec!["Finance".into()];
            }),
            U {
                department: Some("Finance"),
                ..user("alice")
            },
            ctx(),
            true,
        ),
        (
            "department excluded beats all users",
            with(&|p| p.assignments.departments.exclude = vec!["Finance".into()]),
            U {
                department: Some("Finance"),
                ..user("alice")
            },
            ctx(),
            false,
        ),
        (
            "role not held",
            with(&|p| {
                p.assignments.users.include = vec![];
                p.assignments.roles.include = vec![Role::Admin];
            }),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "excluded user beats all users",
            with(&|p| p.assignments.users.exclude = vec!["alice".into()]),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "excluded group beats included user",
            with(&|p| {
                p.assignments.users.include = vec!["alice".into()];
                p.assignments.groups.exclude = vec!["staff".into()];
            }),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "excluded role beats included group",
            with(&|p| {
                p.assignments.groups.include = vec!["it".into()];
                p.assignments.roles.exclude = vec![Role::Admin];
            }),
            admin(),
            ctx(),
            false,
        ),
        (
            "application targeted",
            with(&|p| p.assignments.applications.include = vec!["payroll".into()]),
            user("alice"),
            app("payroll"),
            true,
        ),
        (
            "application not targeted",
            with(&|p| p.assignments.applications.include = vec!["payroll".into()]),
            user("alice"),
            app("wiki"),
            false,
        ),
        (
            "application excluded beats all apps",
            with(&|p| p.assignments.applications.exclude = vec!["wiki".into()]),
            user("alice"),
            app("wiki"),
            false,
        ),
        (
            "no application is the portal",
            with(&|p| p.assignments.applications.include = vec![PORTAL_APPLICATION.into()]),
            user("alice"),
            ctx(),
            true,
        ),
        (
            "user-action policy ignores plain sign-ins",
            with(&|p| {
                p.assignments.applications.include = vec![];
                p.assignments.user_actions = vec![UserAction::RegisterSecurityInfo];
            }),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "user-action policy applies to registration",
            with(&|p| {
                p.assignments.applications.include = vec![];
                p.assignments.user_actions = vec![UserAction::RegisterSecurityInfo];
            }),
            user("alice"),
            AccessContext {
                action: Some(UserAction::RegisterSecurityInfo),
                ..ctx()
            },
            true,
        ),
        (
            "trusted location included",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec!["trusted".into()],
                    exclude: vec![],
                })
            }),
            user("alice"),
            at("10.1.2.3"),
            true,
        ),
        (
            "untrusted location: inside an untrusted named location",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec!["untrusted".into()],
                    exclude: vec![],
                })
            }),
            user("alice"),
            at("203.0.113.9"),
            true,
        ),
        (
            "untrusted location: unknown address",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec!["untrusted".into()],
                    exclude: vec![],
                })
            }),
            user("alice"),
            ctx(),
            true,
        ),
        (
            "untrusted location: in the office",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec!["untrusted".into()],
                    exclude: vec![],
                })
            }),
            user("alice"),
            at("10.9.9.9"),
            false,
        ),
        (
            "all locations except the office",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec![ALL.into()],
                    exclude: vec!["office".into()],
                })
            }),
            user("alice"),
            at("10.0.0.1"),
            false,
        ),
        (
            "named location by name",
            with(&|p| {
                p.conditions.locations = Some(IncludeExclude {
                    include: vec!["sanctioned".into()],
                    exclude: vec![],
                })
            }),
            user("alice"),
            at("203.0.113.1"),
            true,
        ),
        (
            "device filter: non-compliant targeted, device compliant",
            with(&|p| {
                p.conditions.devices = Some(DeviceCondition {
                    compliant: Some(false),
                    ..Default::default()
                })
            }),
            user("alice"),
            on(device(true, true, Some(Ownership::Corporate), None)),
            false,
        ),
        (
            "device filter: non-compliant targeted, device unknown",
            with(&|p| {
                p.conditions.devices = Some(DeviceCondition {
                    compliant: Some(false),
                    ..Default::default()
                })
            }),
            user("alice"),
            ctx(),
            true,
        ),
        (
            "device filter: BYOD targeted",
            with(&|p| {
                p.conditions.devices = Some(DeviceCondition {
                    ownership: vec![Ownership::Byod],
                    ..Default::default()
                })
            }),
            user("alice"),
            on(device(false, false, Some(Ownership::Byod), None)),
            true,
        ),
        (
            "device filter: BYOD targeted, corporate device",
            with(&|p| {
                p.conditions.devices = Some(DeviceCondition {
                    ownership: vec![Ownership::Byod],
                    ..Default::default()
                })
            }),
            user("alice"),
            on(device(false, true, Some(Ownership::Corporate), None)),
            false,
        ),
        (
            "device filter: unmanaged targeted, managed device",
            with(&|p| {
                p.conditions.devices = Some(DeviceCondition {
                    managed: Some(false),
                    ..Default::default()
                })
            }),
            user("alice"),
            on(device(false, true, None, None)),
            false,
        ),
        (
            "platform included",
            with(&|p| {
                p.conditions.platforms = Some(IncludeExclude {
                    include: vec![Platform::Ios, Platform::Android],
                    exclude: vec![],
                })
            }),
            user("alice"),
            on(device(false, false, None, Some(Platform::Ios))),
            true,
        ),
        (
            "platform not included",
            with(&|p| {
                p.conditions.platforms = Some(IncludeExclude {
                    include: vec![Platform::Ios],
                    exclude: vec![],
                })
            }),
            user("alice"),
            on(device(false, false, None, Some(Platform::Windows))),
            false,
        ),
        (
            "platform excluded",
            with(&|p| {
                p.conditions.platforms = Some(IncludeExclude {
                    include: vec![],
                    exclude: vec![Platform::Linux],
                })
            }),
            user("alice"),
            on(device(false, false, None, Some(Platform::Linux))),
            false,
        ),
        (
            "unknown platform doesn't match specific platforms",
            with(&|p| {
                p.conditions.platforms = Some(IncludeExclude {
                    include: vec![Platform::Ios],
                    exclude: vec![],
                })
            }),
            user("alice"),
            ctx(),
            false,
        ),
        (
            "high risk targeted",
            with(&|p| p.conditions.sign_in_risk = vec![RiskLevel::Medium, RiskLevel::High]),
            user("alice"),
            risk(RiskLevel::High),
            true,
        ),
        (
            "low risk not targeted",
            with(&|p| p.conditions.sign_in_risk = vec![RiskLevel::Medium, RiskLevel::High]),
            user("alice"),
            risk(RiskLevel::Low),
            false,
        ),
        (
            "no risk not targeted",
            with(&|p| p.conditions.sign_in_risk = vec![RiskLevel::High]),
            user("alice"),
            ctx(),
            false,
        ),
    ];
    for (case, p, u, c, applies) in cases {
        let d = eval(p, &u, &c);
        assert_eq!(d.applied.len() == 1, applies, "case '{case}': {d:#?}");
        assert_eq!(d.is_blocked(), applies, "case '{case}'");
        if !applies {
            assert_eq!(d.skipped.len(), 1, "case '{case}' names why it was skipped");
        }
    }
}

/// (case, grant, device, blocked?, required strengths)
#[test]
fn each_grant_control_and_their_combinations() {
    let compliant = Some(device(true, true, Some(Ownership::Corporate), Some(Platform::Macos)));
    type Case = (
        &'static str,
        Vec<GrantControl>,
        Option<DevicePosture>,
        bool,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("block", vec![GrantControl::Block], None, true, vec![]),
        (
            "block beats the rest",
            vec![strength("mfa"), GrantControl::Block],
            compliant.clone(),
            true,
            vec![],
        ),
        ("require mfa", vec![strength("mfa")], None, false, vec!["mfa"]),
        (
            "require phishing resistant",
            vec![strength("phishing_resistant")],
            None,
            false,
            vec!["phishing_resistant"],
        ),
        (
            "custom strength",
            vec![strength("fido_yubikey")],
            None,
            false,
            vec!["fido_yubikey"],
        ),
        (
            "compliant device, device compliant",
            vec![GrantControl::RequireCompliantDevice],
            compliant.clone(),
            false,
            vec![],
        ),
        (
            "compliant device, device unknown",
            vec![GrantControl::RequireCompliantDevice],
            None,
            true,
            vec![],
        ),
        (
            "compliant device, device not compliant",
            vec![GrantControl::RequireCompliantDevice],
            Some(device(false, true, None, None)),
            true,
            vec![],
        ),
        (
            "compliant device and strength",
            vec![GrantControl::RequireCompliantDevice, strength("passwordless_mfa")],
            compliant.clone(),
            false,
            vec!["passwordless_mfa"],
        ),
    ];
    for (case, grant, dev, blocked, required) in cases {
        let c = AccessContext { device: dev, ..ctx() };
        let d = eval(policy("p", grant), &user("alice"), &c);
        assert_eq!(d.is_blocked(), blocked, "case '{case}': {d:#?}");
        if blocked {
            assert!(d.block_reason().is_some(), "case '{case}' explains the block");
        } else {
            assert_eq!(d.required_strengths, required, "case '{case}'");
        }
    }
}

#[test]
fn several_policies_add_up_and_frequency_takes_the_shortest() {
    let mut a = policy("a", vec![strength("mfa")]);
    a.session.sign_in_frequency_secs = Some(8 * 3600);
    let mut b = policy("b", vec![strength("phishing_resistant")]);
    b.session.sign_in_frequency_secs = Some(3600);
    let d = evaluate(&set(vec![b, a]), &[], &user("alice").facts(), &ctx(), 0);
    // Policies are visited in id order whatever order they were given in.
    assert_eq!(d.required_strengths, vec!["mfa", "phishing_resistant"]);
    assert_eq!(d.sign_in_frequency_secs, Some(3600));
    assert!(!d.strengths_satisfied(&[Password, Totp], None));
    assert!(d.strengths_satisfied(&[Webauthn], None));
}

#[test]
fn report_only_is_listed_but_never_enforced() {
    let mut p = policy("p", vec![GrantControl::Block]);
    p.state = PolicyState::ReportOnly;
    let mut q = policy("q", vec![strength("phishing_resistant")]);
    q.state = PolicyState::ReportOnly;
    let d = evaluate(&set(vec![p, q]), &[], &user("alice").facts(), &ctx(), 0);
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.applied.is_empty());
    assert!(d.required_strengths.is_empty());
    assert_eq!(d.report_only.len(), 2);
    assert_eq!(d.report_only[0].result, Outcome::Block);
    assert_eq!(d.report_only[1].grant, vec![strength("phishing_resistant")]);
}

#[test]
fn disabled_policies_do_nothing() {
    let mut p = policy("p", vec![GrantControl::Block]);
    p.state = PolicyState::Disabled;
    let d = evaluate(&set(vec![p]), &[], &user("alice").facts(), &ctx(), 0);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.skipped[0].reason, "disabled");
}

#[test]
fn exceptions_apply_until_their_end_by_the_clock_alone() {
    let exc = |subject| PolicyException {
        id: "e1".into(),
        policy_id: "p".into(),
        subject,
        expires_at: 1_000,
    };
    let s = set(vec![policy("p", vec![GrantControl::Block])]);
    let u = user("alice");
    for e in [
        exc(ExceptionSubject::User("alice".into())),
        exc(ExceptionSubject::Group("staff".into())),
    ] {
        assert!(!evaluate(&s, std::slice::from_ref(&e), &u.facts(), &ctx(), 999).is_blocked());
        assert!(evaluate(&s, std::slice::from_ref(&e), &u.facts(), &ctx(), 1_000).is_blocked());
    }
    // An exception for another policy or person changes nothing.
    let other = PolicyException {
        policy_id: "q".into(),
        ..exc(ExceptionSubject::User("alice".into()))
    };
    assert!(evaluate(&s, &[other], &u.facts(), &ctx(), 0).is_blocked());
    assert!(evaluate(&s, &[exc(ExceptionSubject::User("bob".into()))], &u.facts(), &ctx(), 0).is_blocked());
}

#[test]
fn break_glass_accounts_are_excluded_by_design() {
    let mut u = admin();
    u.break_glass = true;
    let d = evaluate(
        &set(vec![policy("p", vec![GrantControl::Block])]),
        &[],
        &u.facts(),
        &ctx(),
        0,
    );
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.break_glass);
    assert!(d.skipped[0].reason.contains("break-glass"));
}

#[test]
fn a_user_action_policy_governs_registration_instead_of_app_policies() {
    let device_needed = policy("a-all", vec![GrantControl::RequireCompliantDevice]);
    let mut enroll = policy("b-enroll", vec![strength("passwordless_mfa")]);
    enroll.assignments.applications.include = vec![];
    enroll.assignments.user_actions = vec![UserAction::RegisterSecurityInfo];
    let s = set(vec![device_needed, enroll]);
    let register = AccessContext {
        action: Some(UserAction::RegisterSecurityInfo),
        ..ctx()
    };
    let d = evaluate(&s, &[], &user("alice").facts(), &register, 0);
    assert_eq!(d.outcome, Outcome::Allow, "{d:#?}");
    assert_eq!(d.required_strengths, vec!["passwordless_mfa"]);
    assert!(d.skipped[0].reason.contains("governed by a user-action policy"));
    // Every other sign-in still needs the compliant device.
    assert!(evaluate(&s, &[], &user("alice").facts(), &ctx(), 0).is_blocked());
}

#[test]
fn tap_counts_as_phishing_resistant_only_to_register_security_info() {
    let pr = AuthenticationStrength::builtin(AuthStrength::PhishingResistant);
    assert!(!pr.satisfied_by(&[TemporaryAccessPass], None));
    assert!(!pr.for_action(None).satisfied_by(&[TemporaryAccessPass], None));
    assert!(pr
        .for_action(Some(UserAction::RegisterSecurityInfo))
        .satisfied_by(&[TemporaryAccessPass], None));
}

#[test]
fn aaguid_allow_list_limits_webauthn() {
    let s = set(vec![]);
    let yk = s.strength("fido_yubikey").unwrap();
    assert!(yk.satisfied_by(&[Webauthn], Some("CB69481E-8FF7-4039-93EC-0A2729A154A8")));
    assert!(!yk.satisfied_by(&[Webauthn], Some("00000000-0000-0000-0000-000000000000")));
    assert!(!yk.satisfied_by(&[Webauthn], None));
}

/// The data form of each built-in agrees with `AuthStrength::achieved` for
/// every set of methods, so strengths are ordered the same way in both.
#[test]
fn builtin_strength_data_matches_the_strength_order() {
    let all = [
        Password,
        Totp,
        RecoveryCode,
        TemporaryAccessPass,
        Webauthn,
        Push,
        Sms,
        Voice,
    ];
    for mask in 0u32..(1 << all.len()) {
        let methods: Vec<VerifyMethod> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        let achieved = AuthStrength::achieved(&methods);
        for s in [
            AuthStrength::Mfa,
            AuthStrength::PasswordlessMfa,
            AuthStrength::PhishingResistant,
        ] {
            assert_eq!(
                AuthenticationStrength::builtin(s).satisfied_by(&methods, None),
                achieved.is_some_and(|a| a >= s),
                "{methods:?} vs {}",
                s.as_str()
            );
        }
    }
}

#[test]
fn evaluation_is_deterministic() {
    let policies: Vec<_> = (0..20)
        .map(|i| {
            policy(
                &format!("p{i:02}"),
                vec![strength(if i % 2 == 0 { "mfa" } else { "passwordless_mfa" })],
            )
        })
        .collect();
    let mut reversed = policies.clone();
    reversed.reverse();
    let a = evaluate(&set(policies), &[], &user("alice").facts(), &ctx(), 0);
    let b = evaluate(&set(reversed), &[], &user("alice").facts(), &ctx(), 0);
    assert_eq!(a, b);
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

#[test]
fn validation_refuses_dangling_references_and_empty_policies() {
    let bad = |p: ConditionalAccessPolicy| {
        PolicySet {
            policies: vec![p],
            ..Default::default()
        }
        .validated()
        .unwrap_err()
    };
    bad(policy("p", vec![strength("nope")]));
    bad(policy("p", vec![]));
    let mut p = policy("p", vec![GrantControl::Block]);
    p.conditions.locations = Some(IncludeExclude {
        include: vec!["mars".into()],
        exclude: vec![],
    });
    bad(p);
    let mut p = policy("p", vec![GrantControl::Block]);
    p.assignments.users.include.clear();
    bad(p);
    let twice = PolicySet {
        policies: vec![
            policy("p", vec![GrantControl::Block]),
            policy("p", vec![GrantControl::Block]),
        ],
        ..Default::default()
    };
    assert!(twice.validated().is_err());
    let pw_only = PolicySet {
        strengths: vec![AuthenticationStrength {
            name: "weak".into(),
            description: String::new(),
            combinations: vec![vec![Password]],
            aaguids: None,
        }],
        ..Default::default()
    };
    assert!(pw_only.validated().is_err());
}

#[test]
fn policy_sets_round_trip_through_json_with_cidr_ranges() {
    let s = set(vec![policy(
        "p",
        vec![GrantControl::RequireCompliantDevice, strength("mfa")],
    )]);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"10.0.0.0/8\""));
    let back: PolicySet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let bad = json.replace("10.0.0.0/8", "10.0.0.0/99");
    assert!(serde_json::from_str::<PolicySet>(&bad).is_err());
}

#[test]
fn exception_rules() {
    let now = 1_000_000;
    assert!(validate_exception("alice", "bob", "vendor laptop", now + 86_400, 30, now).is_ok());
    assert!(validate_exception("alice", "alice", "vendor laptop", now + 86_400, 30, now).is_err());
    assert!(validate_exception("alice", "bob", "", now + 86_400, 30, now).is_err());
    assert!(validate_exception("alice", "bob", "vendor laptop", now, 30, now).is_err());
    assert!(validate_exception("alice", "bob", "vendor laptop", now + 31 * 86_400, 30, now).is_err());
}

#[test]
fn a_web_sign_in_for_an_application_must_satisfy_both() {
    let for_app = |id: &str, app: &str, grant: Vec<GrantControl>, freq: Option<i64>| {
        let mut p = policy(id, grant);
        p.assignments.applications.include = vec![app.into()];
        p.session.sign_in_frequency_secs = freq;
        p
    };
    let s = set(vec![
        for_app("a-web", "web", vec![strength("mfa")], Some(8 * 3600)),
        for_app("b-payroll", "payroll", vec![strength("phishing_resistant")], Some(3600)),
        for_app("c-legacy", "legacy", vec![GrantControl::Block], None),
    ]);
    let at = |app: &str| {
        let c = AccessContext {
            application: Some(app.into()),
            ..ctx()
        };
        evaluate(&s, &[], &user("alice").facts(), &c, 0)
    };
    let d = at("web").combine(at("payroll"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.required_strengths, vec!["mfa", "phishing_resistant"]);
    assert_eq!(d.sign_in_frequency_secs, Some(3600));
    assert!(!d.strengths_satisfied(&[Password, Totp], None));
    assert!(d.strengths_satisfied(&[Webauthn], None));
    let applied: Vec<_> = d.applied.iter().map(|r| r.policy_id.as_str()).collect();
    assert_eq!(applied, vec!["a-web", "b-payroll"]);
    assert!(d.skipped.iter().all(|s| s.policy_id == "c-legacy"), "{:?}", d.skipped);
    // Any block blocks; the same strength is not required twice.
    let d = at("web").combine(at("legacy"));
    assert!(d.is_blocked());
    assert_eq!(d.required_strengths, vec!["mfa"]);
    assert_eq!(at("web").combine(at("web")).required_strengths, vec!["mfa"]);
}
