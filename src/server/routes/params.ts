import { API_VERSION } from "../../api/meta.js";

/** Where Loom's own resources live: /apis/loom.dev/v1alpha1. */
export const BASE = `/apis/${API_VERSION}`;

/** The path parameters the resource routes use. */
export type Params = { project?: string; plural?: string; name?: string };
export type Query = Record<string, string | undefined>;

/** `?dryRun=All`: validate and default, store nothing (as Kubernetes). */
export const dryRun = (q: Query) => q.dryRun === "All";
