//! The metric names a PromQL expression (or a Grafana query) reads, found
//! with a real PromQL parser (promql-parser), not by pattern matching.

use std::collections::BTreeSet;

use promql_parser::parser::{self, Expr};

/// Grafana's built-in variables, replaced by values PromQL accepts.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$instance", ".*"),
];

/// Metric names in `expr` (a Prometheus rule or a Grafana target expression).
///
/// # Panics
/// When the expression does not parse: a dashboard or rule with invalid
/// PromQL is a defect the test must report.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut text = expr.to_string();
    for (var, value) in GRAFANA_VARIABLES {
        text = text.replace(var, value);
    }
    assert!(
        !text.contains('$'),
        "unknown Grafana variable in {expr:?} (add it to GRAFANA_VARIABLES)"
    );
    let ast = parser::parse(&text).unwrap_or_else(|e| panic!("invalid PromQL {expr:?}: {e}"));
    let mut names = BTreeSet::new();
    walk(&ast, &mut names);
    assert!(!names.is_empty(), "{expr:?} reads no metric");
    names
}

/// `label_values(metric, label)` (a Grafana variable query): the metric.
pub fn label_values_metric(query: &str) -> String {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query {query:?}"));
    let (selector, _label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a metric: {query:?}"));
    metric_names(selector).into_iter().next().unwrap()
}

fn walk(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Aggregate(a) => {
            walk(&a.expr, out);
            if let Some(p) = &a.param {
                walk(p, out);
            }
        }
        Expr::Unary(u) => walk(&u.expr, out),
        Expr::Binary(b) => {
            walk(&b.lhs, out);
            walk(&b.rhs, out);
        }
        Expr::Paren(p) => walk(&p.expr, out),
        Expr::Subquery(s) => walk(&s.expr, out),
        Expr::VectorSelector(v) => selector(v, out),
        Expr::MatrixSelector(m) => selector(&m.vs, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(v: &parser::VectorSelector, out: &mut BTreeSet<String>) {
    let name = v.name.clone().or_else(|| {
        v.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
    });
    out.insert(name.unwrap_or_else(|| panic!("selector without a metric name: {v}")));
}

#[test]
fn names_come_from_the_parse_tree() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~\"$instance\"}[$__rate_interval]))) \
         / on (instance) b or vector(0) + {__name__=\"c\"}",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["a_bucket", "b", "c"]
    );
    assert_eq!(
        label_values_metric("label_values(cutover_build_info, instance)"),
        "cutover_build_info"
    );
}
