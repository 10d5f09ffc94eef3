import { useEffect, useState } from "react";

/**
 * Hash routes (#/jobs/default/hello): the server serves one page at /, so no path of the API can
 * collide with a page's, and a reload lands on the same page.
 */
export function useRoute(): string[] {
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

/** The href of a page. */
export const href = (...parts: string[]) => `#/${parts.map(encodeURIComponent).join("/")}`;

function read(): string[] {
  return window.location.hash
    .replace(/^#\/?/, "")
    .split("/")
    .filter(Boolean)
    .map((s) => decodeURIComponent(s));
}
