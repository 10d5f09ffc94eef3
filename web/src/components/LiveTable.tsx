import type { ReactNode } from "react";
import { age, keyOf, kindPath, type Resource } from "../api.js";
import { href } from "../router.js";
import { useMe } from "../session.js";
import { useWatchedList } from "../watch.js";

/** A column of a live list between its Phase and Age columns. */
export interface Column<T> {
  header: string;
  cell(o: T): ReactNode;
}

/**
 * A page listing every object of a kind the user can see, live through the API's watch: project,
 * name (linking to the object's page), phase, the kind's own columns, age.
 */
export function LiveTable<T extends Resource>(props: {
  title: string;
  plural: string;
  /** The first part of an object's page route (#/ROUTE/PROJECT/NAME). */
  route: string;
  empty: ReactNode;
  columns: Column<T>[];
  sort?: (a: T, b: T) => number;
}) {
  const { title, plural, route, empty, columns, sort } = props;
  const me = useMe();
  const list = useWatchedList<T>(kindPath(plural, me.allProjects ? undefined : me.project));
  const now = Date.now();
  const rows = sort ? [...list.items].sort(sort) : list.items;
  return (
    <>
      <h1>{title}</h1>
      {list.error && <p role="alert">{list.error}</p>}
      {!list.loaded ? (
        <p className="muted">Loading…</p>
      ) : rows.length === 0 ? (
        <p className="muted">{empty}</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Project</th>
              <th scope="col">Name</th>
              <th scope="col">Phase</th>
              {columns.map((c) => (
                <th scope="col" key={c.header}>
                  {c.header}
                </th>
              ))}
              <th scope="col">Age</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((o) => (
              <tr key={keyOf(o)}>
                <td>{o.metadata.project}</td>
                <td>
                  <a href={href(route, o.metadata.project ?? "", o.metadata.name)}>{o.metadata.name}</a>
                </td>
                <td className={`phase ${o.status?.phase ?? "Pending"}`}>{o.status?.phase ?? "Pending"}</td>
                {columns.map((c) => (
                  <td key={c.header}>{c.cell(o)}</td>
                ))}
                <td>{age(o.metadata.creationTimestamp, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
