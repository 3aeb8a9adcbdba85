/** Small SVG charts (no chart library): a multi-series line chart and a bar chart with a limit line and markers. */
const COLORS = ['#2563eb', '#db2777', '#059669', '#d97706', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

export function colorOf(i: number): string {
  return COLORS[i % COLORS.length] ?? '#2563eb';
}

export interface Series {
  name: string;
  points: { t: number; v: number }[];
}

const W = 720;
const H = 220;
const PAD = { l: 44, r: 12, t: 12, b: 28 };

function niceMax(v: number): number {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(t: number): string {
  return new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function LineChart({ series, title }: { series: Series[]; title: string }): React.JSX.Element {
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p.t), Date.now() - 60_000);
  const t1 = Math.max(...all.map((p) => p.t), t0 + 1);
  const vmax = niceMax(Math.max(0, ...all.map((p) => p.v)));
  const x = (t: number): number => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v: number): number => H - PAD.b - (v / vmax) * (H - PAD.t - PAD.b);
  const ticks = [0, vmax / 2, vmax];
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {ticks.map((v) => (
          <g key={v}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(v)} y2={y(v)} className="grid" />
            <text x={PAD.l - 6} y={y(v) + 4} textAnchor="end" className="axis">
              {Number.isInteger(v) ? v : v.toFixed(1)}
            </text>
          </g>
        ))}
        <text x={PAD.l} y={H - 8} className="axis">
          {timeLabel(t0)}
        </text>
        <text x={W - PAD.r} y={H - 8} textAnchor="end" className="axis">
          {timeLabel(t1)}
        </text>
        {series.map((s, i) =>
          s.points.length === 1 ? (
            <circle key={s.name} cx={x(s.points[0]?.t ?? t0)} cy={y(s.points[0]?.v ?? 0)} r={3} fill={colorOf(i)} />
          ) : (
            <polyline key={s.name} fill="none" stroke={colorOf(i)} strokeWidth={2} points={s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ')} />
          ),
        )}
      </svg>
      <figcaption>
        <ul className="legend">
          {series.map((s, i) => (
            <li key={s.name} data-series={s.name}>
              <span className="swatch" style={{ background: colorOf(i) }} /> {s.name}: {s.points[s.points.length - 1]?.v ?? 0}
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}

export interface MinuteBar {
  minute: string;
  assigned: number;
  failed: number;
  throttled: number;
}

export function RateChart({ bars, quota, title }: { bars: MinuteBar[]; quota: number | null; title: string }): React.JSX.Element {
  const vmax = niceMax(Math.max(quota ?? 0, ...bars.map((b) => b.assigned + b.failed), ...bars.map((b) => b.throttled)));
  const n = Math.max(1, bars.length);
  const bw = (W - PAD.l - PAD.r) / n;
  const y = (v: number): number => H - PAD.b - (v / vmax) * (H - PAD.t - PAD.b);
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {[0, vmax / 2, vmax].map((v) => (
          <g key={v}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(v)} y2={y(v)} className="grid" />
            <text x={PAD.l - 6} y={y(v) + 4} textAnchor="end" className="axis">
              {Number.isInteger(v) ? v : v.toFixed(1)}
            </text>
          </g>
        ))}
        {bars.map((b, i) => {
          const x0 = PAD.l + i * bw + 1;
          return (
            <g key={b.minute}>
              <title>{`${b.minute}Z: ${b.assigned} assigned, ${b.failed} failed, ${b.throttled} throttled (429)`}</title>
              <rect x={x0} width={Math.max(1, bw - 2)} y={y(b.assigned)} height={H - PAD.b - y(b.assigned)} fill="#2563eb" />
              <rect x={x0} width={Math.max(1, bw - 2)} y={y(b.assigned + b.failed)} height={y(b.assigned) - y(b.assigned + b.failed)} fill="#d97706" />
              {b.throttled > 0 && <path d={`M ${x0 + bw / 2 - 4} ${PAD.t} l 8 0 l -4 7 z`} fill="#dc2626" className="throttled" />}
            </g>
          );
        })}
        {quota !== null && (
          <g>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(quota)} y2={y(quota)} stroke="#dc2626" strokeDasharray="6 4" />
            <text x={W - PAD.r} y={y(quota) - 4} textAnchor="end" className="axis">
              quota {quota}/min
            </text>
          </g>
        )}
        <text x={PAD.l} y={H - 8} className="axis">
          {bars[0]?.minute.slice(11) ?? ''}Z
        </text>
        <text x={W - PAD.r} y={H - 8} textAnchor="end" className="axis">
          {bars[bars.length - 1]?.minute.slice(11) ?? ''}Z
        </text>
      </svg>
      <figcaption>
        <ul className="legend">
          <li>
            <span className="swatch" style={{ background: '#2563eb' }} /> assigned
          </li>
          <li>
            <span className="swatch" style={{ background: '#d97706' }} /> failed
          </li>
          <li>
            <span className="swatch" style={{ background: '#dc2626' }} /> ▼ minute with 429 answers
          </li>
          {quota === null && <li>no registrations-per-minute quota set</li>}
        </ul>
      </figcaption>
    </figure>
  );
}
