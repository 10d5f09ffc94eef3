/** Quantities as people read them. */
export const cores = (millis: number) => Math.round(millis / 100) / 10;
export const gib = (bytes: number) => Math.round((bytes / 2 ** 30) * 10) / 10;
