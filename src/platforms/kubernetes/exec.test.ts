import { describe, expect, it } from "vitest";
import { listeningPortsOf } from "./exec.js";

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 101 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 102 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 103 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 104 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 105 1 0000000000000000 100 0 0 10 0
`;

describe("listeningPortsOf", () => {
  it("reads the LISTEN rows of tcp and tcp6 printed one after the other, each port once", () => {
    // 8888 (0.0.0.0), 8080 (127.0.0.1 and ::1), 22 (::); the established 8080 row is not a listener.
    expect(listeningPortsOf(TCP + TCP6)).toEqual([22, 8080, 8888]);
  });

  it("ignores headers, blank lines and anything that is not a table row", () => {
    expect(listeningPortsOf("cat: /proc/net/tcp6: No such file or directory\n\n")).toEqual([]);
    expect(listeningPortsOf(TCP.split("\n")[0]!)).toEqual([]);
  });
});
