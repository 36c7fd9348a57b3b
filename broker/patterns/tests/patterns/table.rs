//! Every operator, with events that match and events that do not, taken
//! from AWS's documentation (each group cites its page). Each case is
//! checked with the reference interpreter, with a matcher holding only
//! its pattern, and with one matcher holding the whole table.

use serde_json::{Value, json};
use tidewire_patterns::{Event, Matcher, Pattern};

struct Case {
    /// Where the example comes from, and what it shows.
    what: &'static str,
    pattern: Value,
    event: Value,
    matches: bool,
}

fn case(what: &'static str, pattern: Value, event: Value, matches: bool) -> Case {
    Case {
        what,
        pattern,
        event,
        matches,
    }
}

/// The sample event of aws/event-ruler's README ("Ruler by Example").
fn ec2() -> Value {
    json!({
        "version": "0",
        "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "012345679012",
        "time": "2017-10-02T16:24:49Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
        "detail": {
            "c-count": 5,
            "d-count": 3,
            "x-limit": 301.8,
            "source-ip": "10.0.0.33",
            "instance-id": "i-000000aaaaaa00000",
            "state": "running"
        }
    })
}

/// The event of <https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-null-values.html>.
fn autoscaling() -> Value {
    json!({
        "version": "0",
        "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
        "detail-type": "EC2 Instance Launch Successful",
        "source": "aws.autoscaling",
        "account": "123456789012",
        "time": "2015-11-11T21:31:47Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"eventVersion": "", "responseElements": null}
    })
}

/// The array example of aws/event-ruler's README ("JSON Array Matching").
fn employees() -> Value {
    json!({
        "employees": [
            {"firstName": "John", "lastName": "Doe", "middleName": "Q"},
            {"firstName": "Anna", "lastName": "Smith"},
            {"firstName": "Peter", "lastName": "Jones"}
        ]
    })
}

/// The message body of <https://docs.aws.amazon.com/sns/latest/dg/example-filter-policies.html>.
fn transaction() -> Value {
    json!({
        "customer_interests": ["soccer", "rugby", "hockey"],
        "store": "example_corp",
        "event": "order_placed",
        "price_usd": 210.75
    })
}

/// The `$or` examples of aws/event-ruler's README ("The "$or" Primitive"):
/// normal, parallel, and nested.
fn or() -> Value {
    json!({
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {"namespace": ["AWS/EC2", "AWS/ES"]}
        ]
    })
}

fn parallel_or() -> Value {
    json!({
        "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
        "detail": {
            "$or": [
                {"source": ["aws.cloudwatch"]},
                {"detail-type": ["CloudWatch Alarm State Change"]}
            ]
        }
    })
}

fn nested_or() -> Value {
    json!({
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {
                "metricType": ["MetricType"],
                "namespace": ["AWS/EC2", "AWS/ES"],
                "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]
            },
            {"scope": ["Service"]}
        ]
    })
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // aws/event-ruler README, "Simple matching": values are lists; an
        // event array matches when it shares a value with the list.
        case("exact values and an event array", json!({
            "detail-type": ["EC2 Instance State-change Notification"],
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
            "detail": {"state": ["initializing", "running"]}
        }), ec2(), true),
        case("exact value not in the list", json!({"detail": {"state": ["initializing", "stopped"]}}), ec2(), false),
        case("all fields must match", json!({"source": ["aws.ec2"], "region": ["eu-west-1"]}), ec2(), false),
        case("strings are case-sensitive", json!({"source": ["AWS.EC2"]}), ec2(), false),

        // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html
        // ("Begins with", "Ends with", "Equals (ignore case)", and their
        // ignore-case forms).
        case("prefix", json!({"time": [{"prefix": "2017-10-02"}]}), ec2(), true),
        case("prefix, other day", json!({"time": [{"prefix": "2017-10-03"}]}), ec2(), false),
        case("prefix ignoring case", json!({"source": [{"prefix": {"equals-ignore-case": "AWS.EC"}}]}), ec2(), true),
        case("prefix ignoring case, not a prefix", json!({"source": [{"prefix": {"equals-ignore-case": "EC2"}}]}), ec2(), false),
        case("prefix only on strings", json!({"detail": {"c-count": [{"prefix": "5"}]}}), ec2(), false),
        case("suffix", json!({"source": [{"suffix": "ec2"}]}), ec2(), true),
        case("suffix, other", json!({"source": [{"suffix": "s3"}]}), ec2(), false),
        case("suffix ignoring case", json!({"source": [{"suffix": {"equals-ignore-case": "EC2"}}]}), ec2(), true),
        case("suffix ignoring case, other", json!({"source": [{"suffix": {"equals-ignore-case": "EC3"}}]}), ec2(), false),
        case("equals ignoring case", json!({"source": [{"equals-ignore-case": "AWS.Ec2"}]}), ec2(), true),
        case("equals ignoring case, not equal", json!({"source": [{"equals-ignore-case": "aws.ec"}]}), ec2(), false),

        // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html
        // ("Wildcard"), and aws/event-ruler README ("Wildcard matching").
        case("wildcard", json!({"source": [{"wildcard": "aws.*"}]}), ec2(), true),
        case("wildcard, several stars", json!({"detail": {"instance-id": [{"wildcard": "i-*aaa*0"}]}}), ec2(), true),
        case("wildcard, no match", json!({"source": [{"wildcard": "*.s3"}]}), ec2(), false),
        case("wildcard, escaped star", json!({"file": [{"wildcard": "a\\*b*"}]}), json!({"file": "a*bc"}), true),
        case("wildcard, escaped star is literal", json!({"file": [{"wildcard": "a\\*b*"}]}), json!({"file": "axbc"}), false),
        case("wildcard, a file in a folder", json!({"FilePath": [{"wildcard": "dir/*.png"}]}), json!({"FilePath": "dir/photo.png"}), true),

        // aws/event-ruler README ("Anything-but matching") and
        // eb-create-pattern-operators.html ("Anything-but ...").
        case("anything-but a string", json!({"detail": {"state": [{"anything-but": "initializing"}]}}), ec2(), true),
        case("anything-but the value", json!({"detail": {"state": [{"anything-but": "running"}]}}), ec2(), false),
        case("anything-but a list", json!({"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}), ec2(), true),
        case("anything-but a list holding it", json!({"detail": {"state": [{"anything-but": ["stopped", "running"]}]}}), ec2(), false),
        case("anything-but numbers", json!({"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}), ec2(), true),
        case("anything-but the number", json!({"detail": {"x-limit": [{"anything-but": 3.018e2}]}}), ec2(), false),
        case("anything-but a prefix", json!({"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}), ec2(), true),
        case("anything-but its prefix", json!({"detail": {"state": [{"anything-but": {"prefix": ["error", "run"]}}]}}), ec2(), false),
        case("anything-but a suffix", json!({"detail": {"instance-id": [{"anything-but": {"suffix": "1234"}}]}}), ec2(), true),
        case("anything-but its suffix", json!({"detail": {"instance-id": [{"anything-but": {"suffix": ["6789", "000"]}}]}}), ec2(), false),
        case("anything-but ignoring case", json!({"detail": {"state": [{"anything-but": {"equals-ignore-case": "Stopped"}}]}}), ec2(), true),
        case("anything-but it, ignoring case", json!({"detail": {"state": [{"anything-but": {"equals-ignore-case": ["OverLoaded", "RUNNING"]}}]}}), ec2(), false),
        case("anything-but a wildcard", json!({"detail": {"state": [{"anything-but": {"wildcard": "*/bin/*.jar"}}]}}), ec2(), true),
        case("anything-but a wildcard it matches", json!({"detail": {"state": [{"anything-but": {"wildcard": "r*g"}}]}}), ec2(), false),
        case("anything-but needs a value", json!({"detail": {"nothing": [{"anything-but": "x"}]}}), ec2(), false),

        // aws/event-ruler README ("Numeric matching"): JSON numbers only.
        case("numeric ranges and equality", json!({"detail": {
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"numeric": ["=", 3.018e2]}]
        }}), ec2(), true),
        case("numeric, outside the range", json!({"detail": {"c-count": [{"numeric": [">", 5]}]}}), ec2(), false),
        case("numeric, inclusive end", json!({"detail": {"c-count": [{"numeric": [">=", 5, "<", 6]}]}}), ec2(), true),
        case("numeric only on numbers", json!({"detail": {"state": [{"numeric": [">", 0]}]}}), ec2(), false),
        // https://docs.aws.amazon.com/sns/latest/dg/numeric-value-matching.html:
        // 301.5 and 3.015e2 are the same number.
        case("exact numbers compare numerically", json!({"detail": {"x-limit": [3.018e2], "c-count": [5.0]}}), ec2(), true),
        case("a number is not a string", json!({"detail": {"c-count": ["5"]}}), ec2(), false),

        // aws/event-ruler README ("IP Address Matching"; "This also works
        // with IPv6 addresses").
        case("cidr", json!({"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}), ec2(), true),
        case("cidr, other block", json!({"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}), ec2(), false),
        case("cidr, IPv6", json!({"ip": [{"cidr": "2001:db8::/32"}]}), json!({"ip": "2001:db8:1::7"}), true),
        case("cidr, IPv6 outside", json!({"ip": [{"cidr": "2001:db8::/32"}]}), json!({"ip": "2001:db9::7"}), false),
        case("cidr, not an address", json!({"detail": {"state": [{"cidr": "0.0.0.0/0"}]}}), ec2(), false),

        // aws/event-ruler README ("Exists matching"): exists only looks at
        // leaves, so an object does not "exist".
        case("exists", json!({"detail": {"c-count": [{"exists": true}]}}), ec2(), true),
        case("exists, missing", json!({"detail": {"e-count": [{"exists": true}]}}), ec2(), false),
        case("does not exist", json!({"detail": {"e-count": [{"exists": false}]}}), ec2(), true),
        case("does not exist, present", json!({"detail": {"c-count": [{"exists": false}]}}), ec2(), false),
        case("an object is not a leaf (exists: false)", json!({"detail": {"c-count": [{"exists": false}]}}),
            json!({"detail": {"state": "running", "c-count": {"c1": 100}}}), true),
        case("an object is not a leaf (exists: true)", json!({"detail": {"c-count": [{"exists": true}]}}),
            json!({"detail": {"state": "running", "c-count": {"c1": 100}}}), false),
        case("a value or nothing", json!({"detail": {"e-count": [1, {"exists": false}]}}), ec2(), true),

        // aws/event-ruler README ("Complex example").
        case("complex example", json!({
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
                "source-ip": [{"cidr": "10.0.0.0/8"}]
            }
        }), ec2(), true),

        // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-null-values.html
        case("empty string", json!({"detail": {"eventVersion": [""]}}), autoscaling(), true),
        case("null", json!({"detail": {"responseElements": [null]}}), autoscaling(), true),
        case("null is not an empty string", json!({"detail": {"eventVersion": [null]}}), autoscaling(), false),
        case("an empty string is not null", json!({"detail": {"responseElements": [""]}}), autoscaling(), false),
        case("null exists", json!({"detail": {"responseElements": [{"exists": true}]}}), autoscaling(), true),
        case("an empty array has no values", json!({"resources": [{"exists": true}]}), autoscaling(), false),
        case("booleans", json!({"ok": [true]}), json!({"ok": true}), true),
        case("booleans differ", json!({"ok": [true]}), json!({"ok": false}), false),

        // aws/event-ruler README ("And and Or Relationship among fields",
        // "$or" examples).
        case("$or, first branch", or(),
            json!({"source": "aws.cloudwatch", "metricName": "ReadLatency", "namespace": "AWS/RDS"}), true),
        case("$or, second branch", or(),
            json!({"source": "aws.cloudwatch", "metricName": "Other", "namespace": "AWS/EC2"}), true),
        case("$or, no branch", or(),
            json!({"source": "aws.cloudwatch", "metricName": "Other", "namespace": "AWS/RDS"}), false),
        case("parallel $or, nested in an object", parallel_or(),
            json!({"metricName": "CPUUtilization", "detail": {"detail-type": "CloudWatch Alarm State Change"}}), true),
        case("parallel $or, one group unmet", parallel_or(),
            json!({"metricName": "CPUUtilization", "detail": {"source": "aws.ec2"}}), false),
        case("$or inside $or", nested_or(),
            json!({"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2", "spaceId": 1000}), true),
        case("$or inside $or, inner unmet", nested_or(),
            json!({"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2", "spaceId": 1001}), false),

        // aws/event-ruler README ("JSON Array Matching"): objects in
        // arrays match as the parent field's value, and two fields of a
        // match never come from different elements of one array.
        case("a field of an array element", json!({"employees": {"firstName": ["Anna"]}}), employees(), true),
        case("two fields of one element", json!({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}), employees(), true),
        case("two fields of different elements", json!({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}), employees(), false),
        case("nested arrays keep elements apart", json!({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}),
            json!({"employees": [[{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}],
                                 [{"firstName": "Peter", "lastName": "Jones"}]]}), false),
        // exists: false with arrays (event-ruler's ACFinder checks absence
        // among the fields consistent with the elements already matched):
        // Anna has no middle name, though John does.
        case("absent in the matched element", json!({"employees": {"firstName": ["Anna"], "middleName": [{"exists": false}]}}), employees(), true),
        case("present in the matched element", json!({"employees": {"firstName": ["John"], "middleName": [{"exists": false}]}}), employees(), false),
        case("absent alone means absent from every element", json!({"employees": {"middleName": [{"exists": false}]}}), employees(), false),

        // https://docs.aws.amazon.com/sns/latest/dg/example-filter-policies.html
        // (the message body, FilterPolicyScope MessageBody) and
        // https://docs.aws.amazon.com/sns/latest/dg/string-value-matching.html.
        case("SNS body: a list shares a value", json!({"customer_interests": ["rugby", "football", "baseball"]}), transaction(), true),
        case("SNS body: no shared value", json!({"customer_interests": ["basketball", "baseball"]}), transaction(), false),
        case("SNS body: prefix on an array", json!({"customer_interests": [{"prefix": "hock"}]}), transaction(), true),
        case("SNS body: equals-ignore-case", json!({"store": [{"equals-ignore-case": "EXAMPLE_CORP"}]}), transaction(), true),
        case("SNS body: anything-but a prefix", json!({"event": [{"anything-but": {"prefix": "order-"}}]}), transaction(), true),
        case("SNS body: a range", json!({"price_usd": [{"numeric": [">", 0, "<=", 150]}]}), transaction(), false),
        case("SNS body: accepted", json!({
            "store": ["example_corp"],
            "event": [{"anything-but": "order_cancelled"}],
            "customer_interests": ["rugby", "football", "baseball"],
            "price_usd": [{"numeric": [">=", 100]}]
        }), transaction(), true),
        case("SNS body: an attribute that is not there", json!({"store": ["example_corp"], "encrypted": [false]}), transaction(), false),
    ]
}

#[test]
fn every_operator_matches_as_documented() {
    for case in cases() {
        let pattern = Pattern::parse(&case.pattern)
            .unwrap_or_else(|e| panic!("{}: the pattern is refused: {e}", case.what));
        let event = Event::from_json(&case.event);
        assert_eq!(
            pattern.matches(&event),
            case.matches,
            "{} (interpreter)",
            case.what
        );
        let mut matcher = Matcher::new();
        matcher.add(case.what, &pattern);
        assert_eq!(
            matcher.matches(&event) == [case.what],
            case.matches,
            "{} (matcher)",
            case.what
        );
    }
}

#[test]
fn one_matcher_holds_the_whole_table() {
    let cases = cases();
    let patterns: Vec<Pattern> = cases
        .iter()
        .map(|c| Pattern::parse(&c.pattern).unwrap_or_else(|e| panic!("{}: {e}", c.what)))
        .collect();
    let mut matcher = Matcher::new();
    for (i, pattern) in patterns.iter().enumerate() {
        matcher.add(i, pattern);
    }
    assert_eq!(matcher.len(), cases.len());
    for (i, case) in cases.iter().enumerate() {
        let event = Event::from_json(&case.event);
        let mut found = matcher.matches(&event);
        found.sort_unstable();
        let expected: Vec<usize> = (0..patterns.len())
            .filter(|&j| patterns[j].matches(&event))
            .collect();
        assert_eq!(found, expected, "the event of {}", case.what);
        assert_eq!(found.contains(&i), case.matches, "{}", case.what);
    }
    // Taking every other pattern out leaves the others matching.
    for i in (0..patterns.len()).step_by(2) {
        assert!(matcher.remove(&i));
    }
    for case in &cases {
        let event = Event::from_json(&case.event);
        let mut found = matcher.matches(&event);
        found.sort_unstable();
        let expected: Vec<usize> = (1..patterns.len())
            .step_by(2)
            .filter(|&j| patterns[j].matches(&event))
            .collect();
        assert_eq!(
            found, expected,
            "after removals, the event of {}",
            case.what
        );
    }
}
