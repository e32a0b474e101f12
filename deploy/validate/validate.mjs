// Validates every object in the given multi-document YAML files (kustomize output) against
// the Kubernetes and KEDA JSON schemas of kubernetes-models. Exit 1 when any object fails or
// has a kind without a schema.   node validate.mjs rendered.yaml...
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apiVersion group -> the package that carries its models
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("keda.sh/")) return `@kubernetes-models/keda/${apiVersion}/${kind}`;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

// What the schemas cannot say but aerial relies on; returns the problems found.
function policy(obj, deployments) {
  const out = [];
  if (obj.kind === "Deployment") {
    const pod = obj.spec?.template?.spec ?? {};
    if (!(pod.terminationGracePeriodSeconds >= 30))
      out.push("terminationGracePeriodSeconds must cover a batch (>= 30)");
    if (pod.securityContext?.runAsNonRoot !== true) out.push("pods must run as non-root");
    for (const c of pod.containers ?? []) {
      if (!c.readinessProbe || !c.livenessProbe) out.push(`${c.name}: readiness and liveness probes`);
      for (const k of ["requests", "limits"])
        for (const r of ["cpu", "memory"])
          if (!c.resources?.[k]?.[r]) out.push(`${c.name}: resources.${k}.${r} missing`);
    }
  }
  if (obj.kind === "ScaledObject") {
    const s = obj.spec ?? {};
    if (!deployments.has(s.scaleTargetRef?.name))
      out.push(`scaleTargetRef ${s.scaleTargetRef?.name} is not a rendered Deployment`);
    if (!(s.minReplicaCount <= s.maxReplicaCount)) out.push("minReplicaCount > maxReplicaCount");
    for (const t of s.triggers ?? []) {
      // AMQP mode counts only ready messages and scales busy consumers away
      if (t.type === "rabbitmq" && t.metadata?.protocol !== "http")
        out.push(`rabbitmq trigger on ${t.metadata?.queueName}: protocol must be http`);
      if (t.type === "rabbitmq" && !t.authenticationRef?.name)
        out.push("rabbitmq trigger without authenticationRef");
    }
  }
  return out;
}

let failed = 0;
let checked = 0;
const objects = [];
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.error(`${file}: yaml: ${doc.errors.map(String).join("; ")}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj == null) continue;
    const what = `${obj.apiVersion}/${obj.kind} ${obj.metadata?.name ?? "?"}`;
    let Model;
    try {
      const mod = await import(modulePath(String(obj.apiVersion), String(obj.kind)));
      Model = mod[obj.kind];
    } catch {
      Model = undefined;
    }
    if (!Model) {
      console.error(`${what}: no schema for this kind`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      objects.push([what, obj]);
    } catch (e) {
      console.error(`${what}: ${e.message}`);
      failed++;
    }
  }
}
const deployments = new Set(objects.filter(([, o]) => o.kind === "Deployment").map(([, o]) => o.metadata.name));
for (const [what, obj] of objects) {
  const problems = policy(obj, deployments);
  if (problems.length) {
    console.error(`${what}: ${problems.join("; ")}`);
    failed++;
  } else {
    checked++;
    console.log(`ok ${what}`);
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed || checked === 0 ? 1 : 0);
