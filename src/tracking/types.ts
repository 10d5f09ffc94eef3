/** MLflow's tracking objects as the REST API carries them (TrackingStore's arguments and results). */

export interface KeyValue {
  key: string;
  value: string;
}

export interface Experiment {
  experiment_id: string;
  name: string;
  artifact_location: string;
  lifecycle_stage: string;
  creation_time: number;
  last_update_time: number;
  tags?: KeyValue[];
}

export interface Metric {
  key: string;
  value: number | string;
  timestamp: number;
  step: number;
}

export interface RunInfo {
  run_uuid: string;
  run_id: string;
  experiment_id: string;
  run_name: string;
  user_id: string;
  status: string;
  start_time: number;
  end_time?: number;
  artifact_uri: string;
  lifecycle_stage: string;
}

export interface Run {
  info: RunInfo;
  data: { metrics?: Metric[]; params?: KeyValue[]; tags?: KeyValue[] };
  inputs: { dataset_inputs?: unknown[] };
}

export type ViewType = "ACTIVE_ONLY" | "DELETED_ONLY" | "ALL";

export interface RawMetric {
  key?: string;
  value?: number | string;
  timestamp?: number | string;
  step?: number | string;
}

export interface DatasetInput {
  tags?: KeyValue[];
  dataset?: { name?: string; digest?: string; [k: string]: unknown };
}

/** A search over runs, as MLflow's runs/search takes it. */
export interface SearchRunsRequest {
  experimentIds: string[];
  filter?: string;
  viewType?: ViewType;
  maxResults?: number;
  orderBy?: string[];
  pageToken?: string;
}
