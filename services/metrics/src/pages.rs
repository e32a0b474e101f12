//! The dashboard: server-rendered HTML (maud escapes every value), inline SVG charts, map
//! images served from the job's outputs. Every route here is a GET; the labelling writes are
//! in `labelling.rs`, behind the dashboard token.

use crate::api::{error, CompareQuery};
use crate::charts::{heat, line_chart, Series};
use crate::history::{self, RunDetail};
use aerial_shared::{keys, status::JobState, Store};
use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3;cursor:pointer}\
td.l,th.l{text-align:left}nav a{margin-right:1em}.charts{display:flex;flex-wrap:wrap;gap:1em}\
progress{width:12em}.muted{color:#777}";

/// Click a header to sort its table (numbers numerically).
const SORT_JS: &str = "document.querySelectorAll('table.sortable th').forEach((th,i)=>th.onclick=()=>{\
const tb=th.closest('table').tBodies[0];const rows=[...tb.rows];const asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';\
const v=r=>{const t=r.cells[i].dataset.v??r.cells[i].textContent;const n=parseFloat(t);return isNaN(n)?t:n};\
rows.sort((a,b)=>{const x=v(a),y=v(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});rows.forEach(r=>tb.appendChild(r))});";

fn page(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " · aerial" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "runs & jobs" } a href="/api/runs" { "API: runs" } a href="/api/jobs" { "API: jobs" } a href="/metrics" { "metrics" } }
                h1 { (title) }
                (body)
                script { (PreEscaped(SORT_JS)) }
            }
        }
    }
}

fn pct(v: f64) -> String {
    format!("{:.2} %", v * 100.0)
}

async fn index(State(s): State<Store>) -> Response {
    let (runs, jobs) = match (history::runs(&s).await, history::jobs(&s).await) {
        (Ok(r), Ok(j)) => (r, j),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    let running = jobs.iter().any(|j| j.state == JobState::Running);
    let best_two: Vec<&str> = runs.iter().take(2).map(|r| r.run.as_str()).collect();
    page("aerial", running, html! {
        h2 { "Runs" }
        @if runs.is_empty() { p.muted { "No finished runs yet." } } @else {
            table #runs .sortable {
                thead { tr {
                    th.l { "run" } th.l { "method" } th.l { "backbone" } th.l { "depth" }
                    th { "accuracy" } th { "duration s" } th { "train tiles" } th.l { "dataset" }
                } }
                tbody { @for r in &runs { tr {
                    td.l { a href=(format!("/runs/{}", keys::encode_name(&r.run))) { (r.run) } }
                    td.l { (r.method.as_str()) }
                    td.l { (r.backbone) }
                    td.l { (r.retraining.map(|d| format!("{d:?}")).unwrap_or_else(|| "-".into())) }
                    td.accuracy data-v=(r.accuracy) { (pct(r.accuracy)) }
                    td { (format!("{:.1}", r.duration_s)) }
                    td { (r.train_tiles) }
                    td.l { (r.dataset) }
                } } }
            }
            form action="/compare" method="get" {
                "Compare runs (comma-separated): "
                input name="runs" value=(best_two.join(",")) size="40";
                " " button { "compare" }
            }
        }
        h2 { "Jobs" }
        @if jobs.is_empty() { p.muted { "No jobs yet." } } @else {
            table #jobs .sortable {
                thead { tr {
                    th.l { "job" } th.l { "kind" } th.l { "dataset" } th.l { "state" }
                    th { "progress" } th { "done" } th { "failed" } th { "tiles/s" } th { "ETA s" } th { "replicas" }
                } }
                tbody { @for j in &jobs { tr {
                    td.l { a href=(format!("/jobs/{}", j.job_id)) { (j.job_id) } }
                    td.l { (j.kind) } td.l { (j.dataset) } td.l { (format!("{:?}", j.state).to_lowercase()) }
                    td { progress value=(j.done) max=(j.total.max(1)) {} }
                    td { (j.done) "/" (j.total) } td { (j.failed) }
                    td { (format!("{:.1}", j.rate())) }
                    td { (j.eta_seconds().map(|s| format!("{s:.0}")).unwrap_or_else(|| "-".into())) }
                    td { (j.replicas.len()) }
                } } }
            }
        }
    }).into_response()
}

fn curves(d: &RunDetail) -> Markup {
    let h = &d.metrics.history;
    let err: Vec<(f64, f64)> = h
        .iter()
        .map(|e| (f64::from(e.epoch), e.train_error_pct))
        .collect();
    let val: Vec<(f64, f64)> = h
        .iter()
        .map(|e| (f64::from(e.epoch), 100.0 * (1.0 - e.val_accuracy)))
        .collect();
    let loss: Vec<(f64, f64)> = h
        .iter()
        .map(|e| (f64::from(e.epoch), e.train_loss))
        .collect();
    let loss_max = loss.iter().map(|p| p.1).fold(0.1f64, f64::max) * 1.1;
    html! {
        div.charts {
            (line_chart(&format!("{}: error % per epoch", d.summary.run), &[
                Series { name: "train error %", colour: "#d62728", points: err },
                Series { name: "val error %", colour: "#1f77b4", points: val },
            ], 100.0))
            (line_chart(&format!("{}: training loss", d.summary.run), &[
                Series { name: "loss", colour: "#2ca02c", points: loss },
            ], loss_max))
        }
    }
}

async fn run(State(s): State<Store>, Path(id): Path<String>) -> Response {
    let d = match history::run(&s, &id).await {
        Ok(d) => d,
        Err(e) => return error(e),
    };
    let v = &d.metrics.validation;
    let labels: Vec<&str> = v.per_class.iter().map(|c| c.label.as_str()).collect();
    page(&format!("run {}", d.summary.run), false, html! {
        p {
            (d.summary.method.as_str()) " on " (d.summary.backbone)
            @if let Some(depth) = d.summary.retraining { ", retraining " (format!("{depth:?}")) }
            ", dataset " (d.summary.dataset) ", " (d.metrics.train_tiles) " training tiles, "
            (format!("{:.1}", d.summary.duration_s)) " s. "
            strong #accuracy { "Accuracy " (pct(v.accuracy)) } " on " (v.total) " validation tiles, macro F1 " (format!("{:.4}", v.macro_f1)) "."
        }
        h2 { "Per-epoch error and loss" }
        (curves(&d))
        h2 { "Per-class precision, recall, F1" }
        table #per-class {
            thead { tr { th.l { "label" } th { "precision" } th { "recall" } th { "F1" } th { "support" } } }
            tbody { @for c in &v.per_class { tr {
                td.l { (c.label) } td { (format!("{:.3}", c.precision)) } td { (format!("{:.3}", c.recall)) }
                td { (format!("{:.3}", c.f1)) } td { (c.support) }
            } } }
        }
        h2 { "Confusion matrix" }
        p.muted { "Rows: true label; columns: predicted. Shade: share of the row." }
        table #confusion {
            thead { tr { th.l { "true \\ predicted" } @for l in &labels { th { (l) } } } }
            tbody { @for (l, row) in labels.iter().zip(&v.confusion) {
                @let total = row.iter().sum::<u64>().max(1) as f64;
                tr { th.l { (l) } @for n in row { td style=(heat(*n as f64 / total)) { (n) } } }
            } }
        }
        h2 { "Descriptor" }
        pre { (serde_json::to_string_pretty(&d.descriptor).unwrap_or_default()) }
    }).into_response()
}

async fn compare(State(s): State<Store>, Query(q): Query<CompareQuery>) -> Response {
    let mut details = Vec::new();
    for name in q.names() {
        match history::run(&s, &name).await {
            Ok(d) => details.push(d),
            Err(e) => return error(e),
        }
    }
    page("compare runs", false, html! {
        table {
            thead { tr { th.l { "run" } th.l { "method" } th.l { "depth" } th { "accuracy" } th { "macro F1" } th { "epochs" } th { "duration s" } } }
            tbody { @for d in &details { tr {
                td.l { a href=(format!("/runs/{}", keys::encode_name(&d.summary.run))) { (d.summary.run) } }
                td.l { (d.summary.method.as_str()) }
                td.l { (d.summary.retraining.map(|x| format!("{x:?}")).unwrap_or_else(|| "-".into())) }
                td { (pct(d.summary.accuracy)) } td { (format!("{:.4}", d.metrics.validation.macro_f1)) }
                td { (d.metrics.history.len()) } td { (format!("{:.1}", d.summary.duration_s)) }
            } } }
        }
        @for d in &details { h2 { (d.summary.run) } (curves(d)) }
    }).into_response()
}

/// `?date=` of the job page.
#[derive(Deserialize)]
struct DateQuery {
    date: Option<String>,
}

async fn job(
    State(s): State<Store>,
    Path(id): Path<String>,
    Query(q): Query<DateQuery>,
) -> Response {
    let d = match history::job(&s, &id).await {
        Ok(d) => d,
        Err(e) => return error(e),
    };
    let st = &d.status;
    page(&format!("job {}", st.job_id), st.state == JobState::Running, html! {
        p {
            (st.kind) " job on " (st.dataset) ": " (format!("{:?}", st.state).to_lowercase()) ", "
            (st.done) " of " (st.total) " done, " (st.failed) " failed, "
            (format!("{:.1}", st.rate())) " tiles/s"
            @if let Some(eta) = st.eta_seconds() { ", ETA " (format!("{eta:.0}")) " s" }
            ", " (st.replicas.len()) " replica(s) seen."
        }
        progress #progress value=(st.done) max=(st.total.max(1)) {}
        @if let Some(e) = &st.error { p { strong { "error: " } (e) } }
        @if !st.bad.is_empty() {
            h2 { "Refused items" }
            ul { @for b in &st.bad { li { (b.item) ": " (b.reason) } } }
        }
        @if let Some(sum) = &d.summary {
            @let dates: Vec<&String> = sum.tiles_per_date.keys().collect();
            @let shown = q.date.clone().filter(|x| sum.tiles_per_date.contains_key(x))
                .or_else(|| dates.first().map(|x| x.to_string())).unwrap_or_default();
            h2 { "Map" }
            p #maplinks {
                a href=(format!("/jobs/{}/view", st.job_id)) { "view over the imagery" } " · "
                a href=(format!("/jobs/{}/label?mode=assess", st.job_id)) { "assess its accuracy" } " · "
                a href=(format!("/jobs/{}/label?mode=correct", st.job_id)) { "correct it and retrain" }
            }
            p { @for dt in &dates {
                @if **dt == shown { strong { (dt) } " " } @else { a href=(format!("/jobs/{}?date={}", st.job_id, dt)) { (dt) } " " }
            } }
            @let png = keys::output_png(&shown);
            @if sum.outputs.contains(&png) {
                // the browser test reads data-loaded: the image really decoded
                img #map src=(format!("/api/jobs/{}/outputs/{}", st.job_id, png)) alt=(format!("land-use map {shown}"))
                    onload="this.dataset.loaded=this.naturalWidth";
            }
            h2 { "Area per class and date (km²)" }
            table #areas .sortable {
                thead { tr { th.l { "date" } @for l in &sum.labels { th { (l) } } } }
                tbody { @for (dt, per) in &sum.area_km2_per_date { tr {
                    td.l { (dt) } @for l in &sum.labels { td { (format!("{:.2}", per.get(l).copied().unwrap_or(0.0))) } }
                } } }
            }
            h2 { "Outputs" }
            ul { @for o in &sum.outputs { li { a href=(format!("/api/jobs/{}/outputs/{}", st.job_id, o)) { (o) } } } }
        }
        @if let Some(c) = &d.change {
            h2 { "Change " (c.from_date) " → " (c.to_date) @if c.smoothed { " (3×3 plurality smoothed)" } }
            p #change { (c.changed.len()) " of " (c.compared) " tiles changed class." }
            table {
                thead { tr { th.l { "from" } th.l { "to" } th { "tiles" } } }
                tbody { @for (from, to) in &c.transitions { @for (label, n) in to {
                    tr { td.l { (from) } td.l { (label) } td { (n) } }
                } } }
            }
            @if let Some(m) = d.summary.as_ref().and_then(|s| c.matrix_ha(&s.labels).map(|m| (s, m))) {
                h2 { "From → to (hectares)" }
                table #change-matrix {
                    thead { tr { th.l { (c.from_date) " ↓ / " (c.to_date) " →" } @for l in &m.0.labels { th { (l) } } } }
                    tbody { @for (from, row) in &m.1 {
                        tr { td.l { (from) } @for v in row { td { (format!("{v:.1}")) } } }
                    } }
                }
            }
        }
    }).into_response()
}

/// The dashboard routes.
pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(run))
        .route("/compare", get(compare))
        .route("/jobs/{id}", get(job))
        .with_state(store)
}
