import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
  // The package's .wasm is loaded with new URL(..., import.meta.url): let Vite emit it.
  optimizeDeps: { exclude: ['server-state-sync-wasm'] },
  server: { fs: { allow: ['..', '../../npm'] } },
});
