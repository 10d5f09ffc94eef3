/**
 * Everything that needs the machine's one real node (test/k8s/node.sh), in one file so that
 * vitest runs it in order in one worker: the node's own tests (pods, DNS, Services,
 * NetworkPolicy, PodSecurity, a DDP TrainingJob), then Loom installed by Helm on it. Each suite
 * has its own cluster and hands the real node back when it ends. Last, fleet members on it
 * (issue 23): `loom logs` on a control plane reads a job that really ran there, and a member
 * with the real node is lost and comes back.
 */
import "./realnode.suite.js";
import "./helm-realnode.suite.js";
import "./fleet-logs-realnode.suite.js";
import "./fleet-realnode.suite.js";
