import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The portal is served by `homing start` under /portal/ on the DPS service API listener (no CDN: every asset is
// bundled into dist/).
export default defineConfig({
  root: 'app',
  base: '/portal/',
  plugins: [react()],
  build: {
    outDir: '../dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
  },
});
