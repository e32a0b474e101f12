//! The map viewer and the labelling page of a finished score job. Server-rendered frames;
//! the data comes from the job's JSON endpoints and is put on the page with `textContent`
//! only (never as HTML), so names and labels stay text. No external scripts, styles or tiles.

use crate::api::error;
use aerial_shared::{keys, Store};
use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}nav a{margin-right:1em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
td.l,th.l{text-align:left}.muted{color:#777}#stage{position:relative;display:inline-block}\
#stage img,#stage canvas{position:absolute;left:0;top:0;image-rendering:pixelated}\
#legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}\
#tip{position:fixed;background:#fff;border:1px solid #999;padding:4px;font-size:12px;display:none;pointer-events:none}\
#tileimg{width:360px;height:360px;border:1px solid #999;image-rendering:auto}\
.classes button{margin:3px;padding:6px 10px}.classes button.on{outline:3px solid #000}\
.row{display:flex;gap:2em;flex-wrap:wrap}input[type=text],input[type=password]{width:16em}";

fn frame(title: &str, body: Markup, script: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · aerial" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "runs & jobs" } }
                h1 { (title) }
                (body)
                script { (PreEscaped(script)) }
            }
        }
    }
}

/// Shared by both pages: fetch JSON, draw a job's grid over its scene on a canvas.
const COMMON_JS: &str = r#"
const JOB=document.body.dataset.job;
async function getJSON(u){const r=await fetch(u);const j=await r.json();if(!r.ok)throw new Error(j.error||r.status);return j}
function el(tag,text,attrs){const e=document.createElement(tag);if(text!==undefined)e.textContent=text;for(const k in (attrs||{}))e.setAttribute(k,attrs[k]);return e}
async function drawMap(job,date,stage,scale,opacity){
  const g=await getJSON(`/api/jobs/${encodeURIComponent(job)}/grid?date=${encodeURIComponent(date||'')}`);
  const img=stage.querySelector('img'),cv=stage.querySelector('canvas');
  const cell=Math.round(45*scale);
  cv.width=g.cols*cell;cv.height=g.rows*cell;stage.style.width=cv.width+'px';stage.style.height=cv.height+'px';
  img.width=cv.width;img.height=cv.height;
  await new Promise(res=>{img.onload=()=>{img.dataset.loaded=img.naturalWidth;res()};img.onerror=res;img.src=`/api/jobs/${encodeURIComponent(job)}/scene?date=${encodeURIComponent(g.date)}`});
  const ctx=cv.getContext('2d');ctx.clearRect(0,0,cv.width,cv.height);
  for(const c of g.cells){ctx.fillStyle=g.colours[c.k];ctx.fillRect(c.c*cell,c.r*cell,cell,cell)}
  cv.style.opacity=opacity;cv.dataset.cells=g.cells.length;
  return {g,cell};
}
"#;

const VIEW_JS: &str = r#"
const stage=document.getElementById('stage'),op=document.getElementById('opacity'),sel=document.getElementById('date'),tip=document.getElementById('tip');
let cur=null;
async function show(date){
  cur=await drawMap(JOB,date,stage,2,op.value/100);
  if(!sel.options.length){for(const d of cur.g.dates){sel.appendChild(el('option',d,{value:d}))}}
  sel.value=cur.g.date;
  const lg=document.getElementById('legend');lg.textContent='';
  cur.g.labels.forEach((l,i)=>{const s=el('span');s.style.background=cur.g.colours[i];lg.appendChild(s);lg.appendChild(document.createTextNode(l))});
  const counts=cur.g.labels.map((_,i)=>cur.g.cells.filter(c=>c.k===i).length);
  document.getElementById('counts').textContent=cur.g.labels.map((l,i)=>`${l} ${counts[i]}`).join(' · ');
}
op.oninput=()=>{stage.querySelector('canvas').style.opacity=op.value/100};
sel.onchange=()=>show(sel.value);
stage.onmousemove=e=>{if(!cur)return;const r=stage.getBoundingClientRect();
  const col=Math.floor((e.clientX-r.left)/cur.cell),row=Math.floor((e.clientY-r.top)/cur.cell);
  const c=cur.g.cells.find(c=>c.r===row&&c.c===col);if(!c){tip.style.display='none';return}
  tip.textContent='';tip.appendChild(el('b',`${c.id}: ${cur.g.labels[c.k]}`));
  cur.g.labels.map((l,i)=>[l,c.p[i]]).sort((a,b)=>b[1]-a[1]).forEach(([l,p])=>tip.appendChild(el('div',`${l} ${(p*100).toFixed(1)} %`)));
  tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';tip.style.display='block'};
stage.onmouseleave=()=>{tip.style.display='none'};
show(new URLSearchParams(location.search).get('date')).catch(e=>{document.getElementById('err').textContent=e.message});
"#;

async fn view(State(s): State<Store>, Path(job): Path<String>) -> Response {
    if let Err(e) = keys::validate_name(&job) {
        return error(e.into());
    }
    if let Err(e) = s
        .exists(&keys::job_output(&job, keys::OUTPUT_SUMMARY))
        .await
    {
        return error(e);
    }
    let body = html! {
        p { "The class of each tile over the scene it was predicted from. Hover a tile for its probabilities. "
            a href=(format!("/jobs/{job}")) { "job page" } " · "
            a href=(format!("/jobs/{job}/label?mode=correct")) { "correct tiles" } " · "
            a href=(format!("/jobs/{job}/label?mode=assess")) { "assess accuracy" } }
        p { label { "date " select #date {} } " "
            label { "map opacity " input #opacity type="range" min="0" max="100" value="45"; } }
        p #legend {}
        p #counts .muted {}
        p #err {}
        div #stage { img alt="scene"; canvas #grid {} }
        div #tip {}
    };
    let mut page = frame(
        &format!("map {job}"),
        body,
        &format!("{COMMON_JS}{VIEW_JS}"),
    )
    .into_string();
    // the job id reaches the script as a data attribute, escaped like any value
    page = page.replacen("<body>", &format!("<body data-job=\"{}\">", job), 1);
    axum::response::Html(page).into_response()
}

const LABEL_JS: &str = include_str!("label_page.js");

#[derive(Deserialize)]
struct LabelQ {
    mode: Option<String>,
}

async fn label(
    State(s): State<Store>,
    Path(job): Path<String>,
    Query(q): Query<LabelQ>,
) -> Response {
    if let Err(e) = keys::validate_name(&job) {
        return error(e.into());
    }
    if let Err(e) = s
        .exists(&keys::job_output(&job, keys::OUTPUT_SUMMARY))
        .await
    {
        return error(e);
    }
    let assess = q.mode.as_deref() == Some("assess");
    let body = html! {
        p {
            a href=(format!("/jobs/{job}/view")) { "map viewer" } " · "
            @if assess { a href=(format!("/jobs/{job}/label?mode=correct")) { "correction mode" } }
            @else { a href=(format!("/jobs/{job}/label?mode=assess")) { "assessment mode" } }
        }
        @if assess {
            p { "Assessment: label a stratified random sample of the map (by mapped class) to measure its accuracy. "
                "Predictions are hidden so they cannot bias you. "
                strong { "Assessment labels are never used for training." } }
        } @else {
            p { "Correction: label tiles the map got wrong (least confident first), then retrain on your corrections and redraw the map. "
                "Corrections go to a labels dataset of their own (" code { "<region>-labels" } "), usable by " code { "aerial train --dataset rsscn7,<region>-labels" } "." }
        }
        div .row {
            label { "your name " input #who type="text" autocomplete="name"; }
            label { "dashboard token " input #token type="password" autocomplete="off"; }
        }
        div #setup {
            @if assess {
                p { label { "date " select #date {} } " "
                    label { "tiles per mapped class " input #perclass type="number" min="1" max="1000" value="10"; } " "
                    label { "seed " input #seed type="number" value="1"; } " "
                    button #draw { "draw a new sample" } " "
                    label { "or continue " select #designs {} } }
            } @else {
                p { label { "date " select #date {} } }
            }
        }
        p #progress {}
        p #export .muted {}
        div .row {
            div {
                img #tileimg alt="tile";
                p #tilename .muted {}
                p #pred {}
            }
            div {
                div .classes #classes {}
                p { input #newclass type="text" placeholder="new class name (e.g. cropland)"; " " button #addclass { "add" } }
                p { button #prev { "← previous" } " " button #next { "next →" } }
                p .muted { "Keys: 1–9 label and go on, ← → move." }
                p #status {}
            }
        }
        @if assess {
            h2 { "Accuracy of the map (Olofsson et al. 2014, 95 % intervals)" }
            div #results { p .muted { "Label tiles to see the estimates." } }
        } @else {
            h2 { "Retrain and redraw" }
            p { button #retrain { "retrain on my corrections and redraw the map" } }
            p #loop {}
            div #stage { img alt="scene"; canvas {} }
            div #compare {}
        }
    };
    let mode = if assess { "assess" } else { "correct" };
    let mut page = frame(
        &format!("label {job}"),
        body,
        &format!("{COMMON_JS}{LABEL_JS}"),
    )
    .into_string();
    page = page.replacen(
        "<body>",
        &format!("<body data-job=\"{}\" data-mode=\"{mode}\">", job),
        1,
    );
    axum::response::Html(page).into_response()
}

/// The viewer and labelling routes.
pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/jobs/{id}/view", get(view))
        .route("/jobs/{id}/label", get(label))
        .with_state(store)
}
