import {
  MODEL_KEY_ENV,
  MODEL_KEY_FILE,
  MODEL_PYTHON_DIR,
  type ModelAccess,
  type WorkloadModels,
} from "../ports/models.js";
import type { WorkloadRef } from "../ports/runtime.js";
import type { TokenStore } from "../ports/store.js";

/**
 * The bridge between the key file and the official openai Python client, which reads its key
 * only from OPENAI_API_KEY or its constructor. Python runs the first sitecustomize on sys.path
 * at start-up; this one, first on the workload's PYTHONPATH, puts the key into this process's
 * os.environ mapping only (its _data, not the C environment): os.environ.get and so
 * openai.OpenAI() see it, while /proc/PID/environ and child processes (which read the file
 * themselves if they are Python) do not, even those started with env=os.environ.copy() (Jupyter's
 * kernels and terminals): iterating os.environ leaves it out. A spec's own OPENAI_API_KEY wins. Then it runs the next
 * sitecustomize on sys.path (a distribution's, a venv's), as Python would have without it.
 */
export const SITECUSTOMIZE = `"""Loom: lets openai.OpenAI() find this workload's API key with no configuration.

Loom sets LOOM_OPENAI_KEY_FILE (where the key is, not the key) and OPENAI_BASE_URL. When
OPENAI_API_KEY is unset, the key is read from that file into this process's os.environ mapping
only, not into the C environment: /proc/PID/environ and child processes never hold it (a child
Python reads the file itself), not even those given env=os.environ.copy(), as Jupyter's kernels
and terminals are: iterating os.environ leaves the key out. The next sitecustomize on sys.path then runs as it would have.
"""

import os as _os
import sys as _sys


def _loom_openai_key():
    path = _os.environ.get("LOOM_OPENAI_KEY_FILE")
    if not path or _os.environ.get("OPENAI_API_KEY"):
        return
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError:
        return
    env = _os.environ
    data = getattr(env, "_data", None)
    if not key or data is None:
        return
    # os.environ[...] = key would call putenv: the key would reach every child's environment.
    data[env.encodekey("OPENAI_API_KEY")] = env.encodevalue(key)
    # Jupyter starts kernels and terminals with env=os.environ.copy(), as many launchers do:
    # copies (and iteration) leave Loom's key out, while os.environ.get and os.environ[...] (what
    # openai.OpenAI() reads) still find it. A value set later by the program itself is not hidden.
    hidden = (env.encodekey("OPENAI_API_KEY"), env.encodevalue(key))

    def __iter__(self):
        for k in list(self._data):
            if (k, self._data.get(k)) != hidden:
                yield self.decodekey(k)

    try:
        env.__class__ = type("_LoomEnviron", (type(env),), {"__iter__": __iter__})
    except TypeError:
        pass


def _loom_chain():
    import importlib.machinery
    import importlib.util

    here = _os.path.realpath(_os.path.dirname(_os.path.abspath(__file__)))
    rest = [p for p in _sys.path if _os.path.realpath(_os.path.abspath(p or ".")) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_loom_openai_key()
_loom_chain()
`;

/**
 * Model access for workloads over the (bound) token store: per workload and session, one API key
 * of its project for every InferenceService in it, bound to the workload (boundTokens refuses it
 * once the workload is gone, re-created or finished) and revoked when it ends. `baseUrl` is where
 * workloads reach Loom (the same URL as tracking's: the sandbox's network rewrites it to the
 * host's end of its link).
 */
export function workloadModels(tokens: TokenStore, baseUrl: () => string): WorkloadModels {
  /** uid → session → key: a session's key is minted once while this process lives. */
  const live = new Map<string, Map<string, string>>();
  const revokeKeys = async (ref: WorkloadRef) => {
    live.delete(ref.uid);
    // One delete by the workload's uid (indexed), where listing every key of the project to
    // pick them out grew with the project's keys on every job start and end.
    await tokens.revokeWorkload(ref.uid, { apiKeys: true });
  };
  return {
    async access(ref, session, opts): Promise<ModelAccess> {
      // Exclusive (a job's attempt): always a fresh key, as the tracking token is (minting that
      // one revokes every credential of the workload, a cached key included).
      let key = opts?.exclusive ? undefined : live.get(ref.uid)?.get(session);
      if (!key) {
        if (opts?.exclusive) await revokeKeys(ref);
        // As `loom apikey create` makes one (viewer, the project, every service), named after the
        // workload, so `loom apikey list` and the gateway's per-key metrics show whose calls these are.
        key = (
          await tokens.create(`${ref.kind.toLowerCase()}/${ref.name}`, "viewer", {
            project: ref.project,
            apiKey: {},
            workload: ref,
          })
        ).token;
        const sessions = live.get(ref.uid) ?? new Map<string, string>();
        sessions.set(session, key);
        live.set(ref.uid, sessions);
      }
      return {
        env: {
          OPENAI_BASE_URL: `${baseUrl().replace(/\/+$/, "")}/v1`,
          [MODEL_KEY_ENV]: `$(HOME)/${MODEL_KEY_FILE}`,
          PYTHONPATH: `$(HOME)/${MODEL_PYTHON_DIR}`,
        },
        files: [
          { path: MODEL_KEY_FILE, data: `${key}\n`, mode: 0o600 },
          { path: `${MODEL_PYTHON_DIR}/sitecustomize.py`, data: SITECUSTOMIZE, mode: 0o644 },
        ],
      };
    },
    revoke: revokeKeys,
  };
}
