import type { WorkerRecord } from "./workloadfiles.js";

/** Why a worker that ended while the server was down has no exit code. */
export const NO_EXIT_STATUS = "the worker ended while the server was down and left no exit status";

/**
 * How a worker ended, from the best witness there is: the code its shim recorded (a code above
 * 128 is a signal), else what the spawn helper saw, else SIGKILL if the runtime sent one, else
 * nothing known.
 */
export function exitOf(
  recorded: number | undefined,
  code: number | undefined,
  signal: string | undefined,
  killSent: boolean,
  finishTime: string,
): NonNullable<WorkerRecord["exit"]> {
  const exit: NonNullable<WorkerRecord["exit"]> = { finishTime };
  if (recorded !== undefined) {
    exit.code = recorded;
    if (recorded > 128) exit.signal = signalName(recorded - 128);
  } else if (code !== undefined || signal !== undefined) {
    exit.code = code;
    exit.signal = signal;
  } else if (killSent) {
    exit.signal = "SIGKILL";
    exit.code = 137;
  } else {
    exit.message = NO_EXIT_STATUS;
  }
  return exit;
}

const SIGNALS: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  6: "SIGABRT",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
};

/** A signal's name from its number ("signal 42" for one not listed). */
export function signalName(n: number): string {
  return SIGNALS[n] ?? `signal ${n}`;
}
