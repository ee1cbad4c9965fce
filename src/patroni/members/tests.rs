//! Unit tests for `crate::patroni::members`, on `/cluster` as Patroni 3.0.2 answered it
//! (`cluster-3.0.2.json`: `dev/patroni.sh up`, `add`, then `tag pg4 noloadbalance`).

use super::*;

const REAL: &str = include_str!("cluster-3.0.2.json");

fn node(index: usize, name: &str, port: u16, origin: Origin) -> NodeInfo {
    NodeInfo {
        index,
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        origin,
        noloadbalance: false,
        listed: origin == Origin::Config,
    }
}

fn configured() -> Vec<NodeInfo> {
    vec![
        node(0, "pg1", 16432, Origin::Config),
        node(1, "pg2", 16433, Origin::Config),
        node(2, "pg3", 16434, Origin::Config),
    ]
}

#[test]
fn reads_patroni_3_0_2s_cluster() {
    let members = parse(REAL).unwrap();
    assert_eq!(members.len(), 4);
    assert_eq!(
        members[3],
        Member {
            name: "pg4".into(),
            host: Some("127.0.0.1".into()),
            port: Some(16435),
            role: "replica".into(),
            state: "running".into(),
            timeline: Some(4),
            lag: Some(0),
            noloadbalance: true,
        }
    );
    assert_eq!(members[2].role, "leader");
    assert_eq!(members[2].lag, None);
    assert!(!members[0].noloadbalance);
}

#[test]
fn odd_values_are_read_leniently_and_bad_json_is_an_error() {
    let json = r#"{"members": [{"name": "a", "lag": "unknown", "tags": {"noloadbalance": "on"}},
        {"name": "b", "host": "", "port": 0, "tags": {"noloadbalance": false}}], "scope": "x"}"#;
    let members = parse(json).unwrap();
    assert_eq!(members[0].lag, None);
    assert!(members[0].noloadbalance);
    assert_eq!((members[1].host.clone(), members[1].port), (None, None));
    assert!(!members[1].noloadbalance);
    assert!(parse("<html>").is_err());
    assert!(parse(r#"{"nodes": []}"#).is_err());
}

#[test]
fn a_new_member_takes_an_empty_place_and_tags_are_followed() {
    let members = parse(REAL).unwrap();
    let plan = plan(&configured(), &[3, 4], &members);
    assert_eq!(plan.add.len(), 1);
    assert_eq!(plan.add[0].0, 3);
    assert_eq!(plan.add[0].1.name, "pg4");
    assert!(plan.changed.is_empty(), "{plan:?}");
    assert!(plan.no_room.is_empty());

    // Once added: nothing more to do while /cluster says the same.
    let mut nodes = configured();
    nodes.push(NodeInfo {
        noloadbalance: true,
        ..node(3, "pg4", 16435, Origin::Patroni)
    });
    nodes[3].listed = true;
    assert_eq!(plan_of(&nodes, &members), Plan::default());

    // The tag is lifted on pg4 and set on pg1.
    let mut retagged = members.clone();
    retagged[3].noloadbalance = false;
    retagged[0].noloadbalance = true;
    let p = plan_of(&nodes, &retagged);
    assert_eq!(
        p.changed,
        [
            View {
                index: 0,
                listed: true,
                noloadbalance: true
            },
            View {
                index: 3,
                listed: true,
                noloadbalance: false
            }
        ]
    );
}

fn plan_of(nodes: &[NodeInfo], members: &[Member]) -> Plan {
    plan(nodes, &[], members)
}

#[test]
fn members_gone_from_cluster_are_no_longer_listed() {
    let members = parse(REAL).unwrap();
    let mut nodes = configured();
    nodes.push(NodeInfo {
        listed: true,
        ..node(3, "pg4", 16435, Origin::Patroni)
    });
    // pg4 and pg1 leave the cluster.
    let left: Vec<Member> = members
        .into_iter()
        .filter(|m| m.name != "pg4" && m.name != "pg1")
        .collect();
    let p = plan_of(&nodes, &left);
    let gone: Vec<View> = p.changed.clone();
    assert_eq!(gone.len(), 2);
    assert_eq!((gone[0].index, gone[0].listed), (0, false));
    assert_eq!((gone[1].index, gone[1].listed), (3, false));
    // A configured node keeps its reads; one Patroni added loses them.
    assert!(gone[0].balanced(Origin::Config));
    assert!(!gone[1].balanced(Origin::Patroni));
    // noloadbalance: no reads either way.
    let tagged = View {
        index: 0,
        listed: true,
        noloadbalance: true,
    };
    assert!(!tagged.balanced(Origin::Config) && !tagged.balanced(Origin::Patroni));
}

#[test]
fn members_match_nodes_by_address_or_name_and_wait_for_an_address() {
    let members = vec![
        Member {
            name: "postgresql0".into(),
            host: Some("127.0.0.1".into()),
            port: Some(16432),
            role: "leader".into(),
            state: "running".into(),
            timeline: Some(1),
            lag: None,
            noloadbalance: false,
        },
        Member {
            name: "pg2".into(),
            host: Some("10.0.0.2".into()),
            port: Some(5432),
            ..members_template()
        },
        Member {
            name: "starting".into(),
            host: None,
            port: None,
            ..members_template()
        },
        Member {
            name: "new1".into(),
            host: Some("127.0.0.1".into()),
            port: Some(1),
            ..members_template()
        },
        Member {
            name: "new2".into(),
            host: Some("127.0.0.1".into()),
            port: Some(2),
            ..members_template()
        },
    ];
    let p = plan(&configured(), &[7], &members);
    // pg1 by address, pg2 by name; pg3 is not listed; one place for two new members.
    assert_eq!(
        p.changed,
        [View {
            index: 2,
            listed: false,
            noloadbalance: false
        }]
    );
    assert_eq!(p.add.len(), 1);
    assert_eq!((p.add[0].0, p.add[0].1.name.as_str()), (7, "new1"));
    assert_eq!(p.no_room, ["new2"]);
}

fn members_template() -> Member {
    Member {
        name: String::new(),
        host: None,
        port: None,
        role: "replica".into(),
        state: "streaming".into(),
        timeline: Some(1),
        lag: Some(0),
        noloadbalance: false,
    }
}
