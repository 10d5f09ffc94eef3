import { setCondition } from "../../api/meta.js";
import type { Admission, TrainingJob, TrainingJobStatus } from "../../api/trainingjob.js";

/** An admission decided and not written yet: the TrainingJob loop writes it with the start. */
export interface AdmissionOffer {
  admission: Admission;
  /** The Admitted condition's message. */
  message: string;
  at: Date;
}

/** The job's status with an admission in it, as the admission loop writes it (or the start does). */
export function admittedStatus(job: TrainingJob, offer: AdmissionOffer): TrainingJobStatus {
  return {
    ...job.status,
    phase: job.status?.phase ?? "Pending",
    queuePosition: undefined,
    capacityRequest: undefined,
    admission: offer.admission,
    conditions: setCondition(
      job.status?.conditions,
      { type: "Admitted", status: "True", reason: "Admitted", message: offer.message },
      offer.at,
    ),
  };
}
