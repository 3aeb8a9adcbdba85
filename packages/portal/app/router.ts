import { useEffect, useState } from 'react';

/** Hash routing (`#/enrollments/groups/x`): the server serves one index.html, the browser picks the page. */
export interface Route {
  path: string[];
  query: URLSearchParams;
}

function parse(): Route {
  const h = window.location.hash.replace(/^#/, '');
  const [p = '', q = ''] = h.split('?');
  return { path: p.split('/').filter((s) => s.length > 0).map((s) => decodeURIComponent(s)), query: new URLSearchParams(q) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = (): void => setRoute(parse());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function href(...parts: string[]): string {
  return `#/${parts.map((p) => encodeURIComponent(p)).join('/')}`;
}

export function navigate(h: string): void {
  window.location.hash = h;
}
