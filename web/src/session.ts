import { createContext, useContext } from "react";
import type { Me } from "./api.js";

/** Who is logged in: pages show write buttons only to those who may write. */
export const MeContext = createContext<Me | undefined>(undefined);

export function useMe(): Me {
  const me = useContext(MeContext);
  if (!me) throw new Error("useMe outside a session");
  return me;
}
