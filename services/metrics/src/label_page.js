// The labelling page: walks a queue of tiles, one at a time, labels them by click or key,
// and (assessment) shows the accuracy estimates or (correction) retrains and redraws the map.
// Everything from the server is put on the page as text.
const MODE = document.body.dataset.mode;
const $ = id => document.getElementById(id);
const who = $('who'), token = $('token');
who.value = localStorage.getItem('aerial.who') || '';
token.value = sessionStorage.getItem('aerial.token') || '';
who.onchange = () => localStorage.setItem('aerial.who', who.value);
token.onchange = () => sessionStorage.setItem('aerial.token', token.value);
let q = null, pos = 0, design = null, lastLabelAt = null;
const api = p => `/api/jobs/${encodeURIComponent(JOB)}/${p}`;

async function post(path, body) {
  const r = await fetch(api(path), {method: 'POST', headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token.value}, body: JSON.stringify(body)});
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}
function status(text, bad) { const s = $('status'); s.textContent = text; s.style.color = bad ? '#b00' : ''; }

async function load(params) {
  q = await getJSON(api('queue?' + new URLSearchParams(params)));
  const first = q.items.findIndex(i => !i.label);
  pos = first < 0 ? 0 : first;
  drawClasses();
  show();
}
function drawClasses() {
  const box = $('classes'); box.textContent = '';
  q.classes.forEach((c, i) => {
    const b = el('button', (i < 9 ? `${i + 1} ` : '') + c, {'data-class': c});
    b.onclick = () => give(c);
    box.appendChild(b);
  });
}
function show() {
  const it = q.items[pos];
  const done = q.items.filter(i => i.label).length;
  $('progress').textContent = `${done} of ${q.items.length} labelled · tile ${pos + 1} of ${q.items.length}` + (MODE === 'assess' ? ` · sample ${q.design}` : ` · into ${q.labels_dataset}`);
  $('progress').dataset.done = done;
  const ex = $('export'); ex.textContent = 'export labels: ';
  const base = MODE === 'assess' ? `/api/datasets/${encodeURIComponent(q.dataset)}/assessments/${encodeURIComponent(q.design)}/labels` : `/api/datasets/${encodeURIComponent(q.labels_dataset)}/labels`;
  for (const f of ['csv', 'geojson']) { const a = el('a', f.toUpperCase(), {href: `${base}?format=${f}`}); ex.appendChild(a); ex.appendChild(document.createTextNode(' ')); }
  if (!it) return;
  $('tileimg').src = api('tile?id=' + encodeURIComponent(it.id));
  $('tilename').textContent = it.id;
  $('pred').textContent = MODE === 'correct' ? `map says ${it.predicted} (${(it.confidence * 100).toFixed(1)} %)` : '';
  document.querySelectorAll('#classes button').forEach(b => b.classList.toggle('on', b.dataset.class === it.label));
}
async function give(label) {
  const it = q.items[pos];
  if (!it) return;
  const body = {mode: MODE, tile_id: it.id, label, by: who.value};
  if (MODE === 'assess') body.design = q.design; else body.labels_dataset = q.labels_dataset;
  try {
    await post('labels', body);
    it.label = label; lastLabelAt = performance.now();
    if (!q.classes.includes(label)) { q.classes.push(label); drawClasses(); }
    status(`saved: ${it.id} = ${label}`);
    if (pos < q.items.length - 1) pos++;
    show();
    if (MODE === 'assess') results();
  } catch (e) { status('not saved: ' + e.message, true); }
}
$('prev').onclick = () => { if (pos > 0) { pos--; show(); } };
$('next').onclick = () => { if (pos < q.items.length - 1) { pos++; show(); } };
$('addclass').onclick = () => { const v = $('newclass').value.trim(); if (v) give(v); };
document.addEventListener('keydown', e => {
  if (e.target.tagName === 'INPUT' || !q) return;
  if (e.key === 'ArrowLeft') $('prev').click();
  else if (e.key === 'ArrowRight') $('next').click();
  else if (/^[1-9]$/.test(e.key) && q.classes[+e.key - 1]) give(q.classes[+e.key - 1]);
});

function fmt(e, pct) { if (!e) return '–'; const v = pct ? (e.value * 100).toFixed(1) + ' %' : e.value.toFixed(1); const c = e.ci95 == null ? '' : ' ± ' + (pct ? (e.ci95 * 100).toFixed(1) + ' %' : e.ci95.toFixed(1)); return v + c; }
async function results() {
  const all = await getJSON(api('accuracy'));
  const a = all.find(x => x.design === q.design);
  const box = $('results'); box.textContent = '';
  if (!a || !a.assessment) { box.appendChild(el('p', 'Label tiles to see the estimates.', {class: 'muted'})); return; }
  const s = a.assessment;
  box.appendChild(el('p', `Overall accuracy ${fmt(s.overall, true)} (${a.labelled} of ${a.sample} sampled tiles labelled, date ${a.date}).`, {id: 'overall'}));
  if (s.unsampled_strata.length) box.appendChild(el('p', 'Mapped but not sampled, so left out of every estimate: ' + s.unsampled_strata.join(', ')));
  if (s.single_unit_strata.length) box.appendChild(el('p', 'No interval where it depends on a class with a single labelled tile (' + s.single_unit_strata.join(', ') + '): draw more tiles or label more.'));
  const t = el('table', undefined, {id: 'acctable'});
  const h = el('tr'); ['class', 'mapped tiles', 'sampled', 'mapped area (ha)', 'estimated area (ha)', "user's accuracy", "producer's accuracy"].forEach(x => h.appendChild(el('th', x)));
  t.appendChild(h);
  for (const c of s.per_class) {
    const r = el('tr');
    [c.class, c.mapped_units, c.sampled, c.mapped_area.toFixed(1), fmt(c.area), fmt(c.users, true), fmt(c.producers, true)].forEach((x, i) => r.appendChild(el('td', String(x), i ? {} : {class: 'l'})));
    t.appendChild(r);
  }
  box.appendChild(t);
  box.appendChild(el('h3', 'Confusion matrix of the sample (rows: map, columns: your labels)'));
  const m = el('table', undefined, {id: 'confusion'});
  const mh = el('tr'); mh.appendChild(el('th', '')); s.classes.forEach(c => mh.appendChild(el('th', c))); m.appendChild(mh);
  s.counts.forEach((row, i) => { const r = el('tr'); r.appendChild(el('th', s.classes[i])); row.forEach(n => r.appendChild(el('td', String(n)))); m.appendChild(r); });
  box.appendChild(m);
}

async function setup() {
  const g = await getJSON(api('grid'));
  const sel = $('date');
  g.dates.forEach(d => sel.appendChild(el('option', d, {value: d})));
  if (MODE === 'correct') {
    sel.onchange = () => load({mode: 'correct', date: sel.value});
    await load({mode: 'correct', date: sel.value});
    return;
  }
  const acc = await getJSON(api('accuracy'));
  const ds = $('designs');
  ds.appendChild(el('option', '—', {value: ''}));
  acc.filter(a => a.drawn_from === JOB).forEach(a => ds.appendChild(el('option', `${a.design} (${a.labelled}/${a.sample})`, {value: a.design})));
  ds.onchange = () => { if (ds.value) load({mode: 'assess', design: ds.value}).then(results); };
  $('draw').onclick = async () => {
    try {
      const d = await post('assessments', {date: sel.value, per_class: +$('perclass').value, seed: +$('seed').value});
      status(`drew ${d.tiles.length} tiles (${d.stratum_units.map((n, i) => `${d.classes[i]} ${Math.min(n, d.per_class)}/${n}`).join(', ')})`);
      await load({mode: 'assess', design: d.name});
      results();
    } catch (e) { status('could not draw: ' + e.message, true); }
  };
  const mine = acc.filter(a => a.drawn_from === JOB);
  if (mine.length) { ds.value = mine[0].design; await load({mode: 'assess', design: mine[0].design}); results(); }
}

if (MODE === 'correct') {
  $('retrain').onclick = async () => {
    const out = $('loop'), t0 = lastLabelAt || performance.now();
    const say = text => { out.textContent = text; };
    try {
      const r = await post('retrain', {labels_dataset: q.labels_dataset});
      say(`training ${r.run} on ${r.corrections} corrections…`);
      let run = null;
      for (let i = 0; i < 600 && !run; i++) {
        const res = await fetch('/api/runs/' + encodeURIComponent(r.run));
        if (res.ok) run = await res.json(); else await new Promise(s => setTimeout(s, 500));
      }
      if (!run) throw new Error('the run did not finish');
      say(`run ${r.run} done (validation ${(run.summary.accuracy * 100).toFixed(1)} %); scoring the region…`);
      const s = await post('rescore', {run: r.run});
      let st = null;
      for (let i = 0; i < 1200; i++) {
        const res = await fetch('/api/jobs/' + encodeURIComponent(s.job));
        if (res.ok) { st = await res.json(); if (st.summary) break; }
        await new Promise(z => setTimeout(z, 500));
      }
      if (!st || !st.summary) throw new Error('the new map did not finish');
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      await drawMap(s.job, q.date, $('stage'), 2, 0.45);
      say(`new map ${s.job}: ${secs} s from the last label to the new map.`);
      out.dataset.seconds = secs; out.dataset.job = s.job;
      const a = document.createElement('a'); a.href = '/jobs/' + encodeURIComponent(s.job) + '/view'; a.textContent = ' open it in the viewer'; out.appendChild(a);
      const [before, after] = await Promise.all([getJSON(api('accuracy')), getJSON(`/api/jobs/${encodeURIComponent(s.job)}/accuracy`)]);
      const box = $('compare'); box.textContent = '';
      box.appendChild(el('p', 'Overall accuracy on the assessment samples (their labels were not used for training):'));
      const t = el('table', undefined, {id: 'comparison'});
      const h = el('tr'); ['sample', 'labelled', 'this map', 'new map'].forEach(x => h.appendChild(el('th', x))); t.appendChild(h);
      for (const b of before) {
        const n = after.find(x => x.design === b.design);
        const r = el('tr');
        [b.design, `${b.labelled}/${b.sample}`, fmt(b.overall_this_map, true), fmt(n && n.overall_this_map, true)].forEach((x, i) => r.appendChild(el('td', x, i ? {} : {class: 'l'})));
        t.appendChild(r);
      }
      box.appendChild(t);
    } catch (e) { say('retrain failed: ' + e.message); out.style.color = '#b00'; }
  };
}
setup().catch(e => status(e.message, true));
