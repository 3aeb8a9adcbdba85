// Entry for running the CLI from source (tests, development): node --conditions=homing-source --import tsx run.ts
import { main } from './main.ts';

process.exitCode = await main(process.argv);
