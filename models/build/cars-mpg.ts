/**
 * Builds `cars-mpg.onnx`: a small MLP that predicts a car's fuel economy (miles per US gallon) from six raw
 * features, trained from scratch in TypeScript on the vega-datasets `cars` data (originally UCI Auto MPG).
 *
 * Reproducibility rules followed throughout (so every machine produces byte-identical weights):
 * - randomness comes only from the seeded integer PRNG in `prng.ts`;
 * - arithmetic is limited to + - * /, `Math.sqrt` and `Math.fround`, which IEEE 754 specifies exactly
 *   (correctly rounded), in a fixed evaluation order; no `Math.exp`/`Math.log`/`Math.pow`/`Math.tanh`, whose
 *   results are implementation-approximated;
 * - training is full-batch (no mini-batch sampling), for a fixed number of epochs, in float64.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { BATCH_DIM, encodeModel, floatInitializer, floatValueInfo, node } from './onnx-graph';
import { createPrng, shuffled } from './prng';
import { sha256Hex } from './sha256';

/** Input column order of the model; clients must send features in exactly this order. */
export const CARS_FEATURE_NAMES = [
  'cylinders',
  'displacement',
  'horsepower',
  'weight',
  'acceleration',
  'year',
] as const;

/** Units of each input, documented in the model metadata so the .onnx file is self-describing. */
export const CARS_FEATURE_UNITS = [
  'count',
  'cubic inches',
  'hp',
  'lb',
  's (0-60 mph)',
  'model year, four digits (1970-1982)',
] as const;

/** Hyper-parameters of the cars-mpg build. Changing any of them changes the model bytes and its sha256. */
export interface CarsMpgConfig {
  /** Seed for the shuffle (train/holdout split) and the weight initialisation. */
  seed: number;
  /** Fraction of rows used for training; the rest is the holdout split used only for reporting. */
  trainFraction: number;
  /** Width of the single hidden ReLU layer. */
  hidden: number;
  /** Number of full-batch Adam steps. */
  epochs: number;
  learningRate: number;
  /** L2 penalty on the weight matrices (not biases), to keep the small network from over-fitting 300 rows. */
  weightDecay: number;
}

/** The configuration the committed model was built with. */
export const CARS_MPG_CONFIG: CarsMpgConfig = {
  seed: 1970,
  trainFraction: 0.8,
  hidden: 16,
  epochs: 3000,
  learningRate: 0.01,
  weightDecay: 0.001,
};

/** One usable car: raw features in {@link CARS_FEATURE_NAMES} order and the target. */
export interface CarRow {
  name: string;
  features: number[];
  mpg: number;
}

interface RawCar {
  Name: string;
  Miles_per_Gallon: number | null;
  Cylinders: number | null;
  Displacement: number | null;
  Horsepower: number | null;
  Weight_in_lbs: number | null;
  Acceleration: number | null;
  Year: string | null;
}

/**
 * Path of the dataset inside the installed `vega-datasets` package. The package's `exports` map hides `data/`,
 * so we resolve the package entry point and walk to the sibling folder instead.
 */
export function carsDatasetPath(): string {
  const entry = createRequire(import.meta.url).resolve('vega-datasets');
  return join(dirname(entry), '..', 'data', 'cars.json');
}

/**
 * Loads the 406 cars and keeps the 392 with every used field present (8 lack mpg, 6 lack horsepower), in file
 * order. `Year` is a date string such as `1970-01-01`; we keep the four-digit year, which is what clients send.
 */
export function loadCars(path: string = carsDatasetPath()): CarRow[] {
  const raw = JSON.parse(readFileSync(path, 'utf8')) as RawCar[];
  const rows: CarRow[] = [];
  for (const r of raw) {
    const { Cylinders, Displacement, Horsepower, Weight_in_lbs, Acceleration, Year, Miles_per_Gallon } = r;
    if (
      Cylinders === null ||
      Displacement === null ||
      Horsepower === null ||
      Weight_in_lbs === null ||
      Acceleration === null ||
      Year === null ||
      Miles_per_Gallon === null
    ) {
      continue;
    }
    const year = Number(Year.slice(0, 4));
    if (!Number.isInteger(year)) throw new Error(`cars.json: unexpected Year ${JSON.stringify(Year)} for ${r.Name}`);
    rows.push({
      name: r.Name,
      features: [Cylinders, Displacement, Horsepower, Weight_in_lbs, Acceleration, year],
      mpg: Miles_per_Gallon,
    });
  }
  return rows;
}

/** The deterministic train/holdout split: a seeded Fisher–Yates shuffle, then the first `round(0.8·n)` rows train. */
export function splitCars(
  rows: readonly CarRow[],
  config: Pick<CarsMpgConfig, 'seed' | 'trainFraction'> = CARS_MPG_CONFIG,
): { train: CarRow[]; holdout: CarRow[] } {
  // A dedicated stream for the split, so changing the network does not change which rows are held out.
  const order = shuffled(rows, createPrng(config.seed));
  const nTrain = Math.round(rows.length * config.trainFraction);
  return { train: order.slice(0, nTrain), holdout: order.slice(nTrain) };
}

/** Regression metrics in mpg. */
export interface Metrics {
  rmse: number;
  mae: number;
}

/** Root-mean-square and mean-absolute error of predictions against targets. */
export function regressionMetrics(predicted: ArrayLike<number>, actual: ArrayLike<number>): Metrics {
  let se = 0;
  let ae = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = (predicted[i] ?? 0) - (actual[i] ?? 0);
    se += d * d;
    ae += d < 0 ? -d : d;
  }
  return { rmse: Math.sqrt(se / actual.length), mae: ae / actual.length };
}

/** Parameters as stored in the ONNX file (already rounded to float32, target scaling folded into layer 2). */
export interface CarsMpgWeights {
  featureMean: Float32Array;
  featureStd: Float32Array;
  /** `[6, hidden]`, row-major. */
  w1: Float32Array;
  b1: Float32Array;
  /** `[hidden, 1]`. */
  w2: Float32Array;
  b2: Float32Array;
  hidden: number;
}

/** What the build writes to `cars-mpg.eval.json`: plain JSON data, so its encoding is deterministic. */
export interface CarsMpgEval {
  model: 'cars-mpg';
  dataset: { source: string; sha256: string; rows_total: number; rows_used: number };
  split: { seed: number; train_rows: number; holdout_rows: number; method: string };
  network: string;
  training: {
    optimizer: string;
    epochs: number;
    learning_rate: number;
    weight_decay: number;
    loss: string;
    final_train_loss: number;
  };
  /** Metrics of the exported float32 model (what ONNX Runtime serves), in mpg. */
  metrics: { train: Metrics; holdout: Metrics };
  /** Reference points for judging the MLP, computed on the same split. */
  baselines: { holdout_predict_train_mean: Metrics; holdout_linear_least_squares: Metrics };
  /** Input order clients must use. */
  feature_names: string[];
  /** Train-split mean and population std per feature, as stored (float32) in the graph's Sub/Div constants. */
  standardisation: Record<string, { mean: number; std: number }>;
}

/** Result of {@link buildCarsMpg}: the encoded model plus its evaluation report. */
export interface CarsMpgBuild {
  onnx: Uint8Array;
  eval: CarsMpgEval;
  weights: CarsMpgWeights;
}

const F = CARS_FEATURE_NAMES.length;

/** Column means and population standard deviations of the training rows, rounded to float32 as stored. */
function standardisation(train: readonly CarRow[]): { mean: Float32Array; std: Float32Array } {
  const mean = new Float32Array(F);
  const std = new Float32Array(F);
  for (let k = 0; k < F; k++) {
    let s = 0;
    for (const r of train) s += r.features[k] ?? 0;
    const m = s / train.length;
    let v = 0;
    for (const r of train) {
      const d = (r.features[k] ?? 0) - m;
      v += d * d;
    }
    mean[k] = m;
    std[k] = Math.sqrt(v / train.length);
  }
  return { mean, std };
}

/** Standardises raw rows exactly as the graph does (float32 inputs, stored float32 constants). */
function standardise(rows: readonly CarRow[], mean: Float32Array, std: Float32Array): Float64Array {
  const z = new Float64Array(rows.length * F);
  rows.forEach((r, n) => {
    for (let k = 0; k < F; k++) {
      z[n * F + k] = (Math.fround(r.features[k] ?? 0) - (mean[k] ?? 0)) / (std[k] ?? 1);
    }
  });
  return z;
}

/**
 * Evaluates the exported network in float64 on raw feature rows; mirrors the ONNX graph node for node.
 * Used for the metrics in the eval report (ONNX Runtime's float32 result differs by ~1e-5 mpg).
 */
export function predictCarsMpg(weights: CarsMpgWeights, rows: readonly CarRow[]): Float64Array {
  const { hidden: H, w1, b1, w2, b2 } = weights;
  const z = standardise(rows, weights.featureMean, weights.featureStd);
  const out = new Float64Array(rows.length);
  for (let n = 0; n < rows.length; n++) {
    let o = 0;
    for (let j = 0; j < H; j++) {
      let a = 0;
      for (let k = 0; k < F; k++) a += (z[n * F + k] ?? 0) * (w1[k * H + j] ?? 0);
      a += b1[j] ?? 0;
      if (a > 0) o += a * (w2[j] ?? 0);
    }
    out[n] = o + (b2[0] ?? 0);
  }
  return out;
}

/**
 * Ordinary least squares on standardised features (normal equations, Gaussian elimination with partial pivoting)
 * — the linear baseline the MLP should beat.
 */
function linearBaseline(train: readonly CarRow[], holdout: readonly CarRow[], mean: Float32Array, std: Float32Array) {
  const P = F + 1;
  const zt = standardise(train, mean, std);
  const a: number[][] = Array.from({ length: P }, () => new Array<number>(P + 1).fill(0));
  const row = new Array<number>(P);
  train.forEach((r, n) => {
    for (let k = 0; k < F; k++) row[k] = zt[n * F + k] ?? 0;
    row[F] = 1;
    for (let i = 0; i < P; i++) {
      const ai = a[i] as number[];
      for (let j = 0; j < P; j++) ai[j] = (ai[j] ?? 0) + (row[i] ?? 0) * (row[j] ?? 0);
      ai[P] = (ai[P] ?? 0) + (row[i] ?? 0) * r.mpg;
    }
  });
  for (let c = 0; c < P; c++) {
    let pivot = c;
    for (let i = c + 1; i < P; i++) {
      if (Math.abs(a[i]?.[c] ?? 0) > Math.abs(a[pivot]?.[c] ?? 0)) pivot = i;
    }
    const tmp = a[c] as number[];
    a[c] = a[pivot] as number[];
    a[pivot] = tmp;
    const ac = a[c] as number[];
    for (let i = 0; i < P; i++) {
      if (i === c) continue;
      const ai = a[i] as number[];
      const f = (ai[c] ?? 0) / (ac[c] ?? 1);
      for (let j = c; j <= P; j++) ai[j] = (ai[j] ?? 0) - f * (ac[j] ?? 0);
    }
  }
  const beta = a.map((r, i) => (r[P] ?? 0) / (r[i] ?? 1));
  const zh = standardise(holdout, mean, std);
  const pred = holdout.map((_, n) => {
    let s = beta[F] ?? 0;
    for (let k = 0; k < F; k++) s += (zh[n * F + k] ?? 0) * (beta[k] ?? 0);
    return s;
  });
  return regressionMetrics(
    pred,
    holdout.map((r) => r.mpg),
  );
}

/**
 * Trains the 6 → hidden → ReLU → 1 network with full-batch Adam on mean squared error of the standardised target,
 * then folds the target scaling into the output layer and rounds everything to float32.
 */
function train(
  rows: readonly CarRow[],
  mean: Float32Array,
  std: Float32Array,
  config: CarsMpgConfig,
): { weights: CarsMpgWeights; finalLoss: number } {
  const H = config.hidden;
  const N = rows.length;
  const z = standardise(rows, mean, std);
  let ySum = 0;
  for (const r of rows) ySum += r.mpg;
  const yMean = ySum / N;
  let yVar = 0;
  for (const r of rows) yVar += (r.mpg - yMean) * (r.mpg - yMean);
  const yStd = Math.sqrt(yVar / N);
  const y = Float64Array.from(rows, (r) => (r.mpg - yMean) / yStd);

  // Parameter layout in one vector: [W1 (F×H) | b1 (H) | W2 (H) | b2 (1)].
  const oW1 = 0;
  const oB1 = F * H;
  const oW2 = oB1 + H;
  const oB2 = oW2 + H;
  const P = oB2 + 1;
  const params = new Float64Array(P);
  // A separate PRNG stream from the split (seed + 1), He-uniform for the ReLU layer, Xavier-uniform for the output.
  const prng = createPrng(config.seed + 1);
  const lim1 = Math.sqrt(6 / F);
  for (let i = 0; i < F * H; i++) params[oW1 + i] = prng.uniform(lim1);
  const lim2 = Math.sqrt(6 / (H + 1));
  for (let j = 0; j < H; j++) params[oW2 + j] = prng.uniform(lim2);

  const grad = new Float64Array(P);
  const m = new Float64Array(P);
  const v = new Float64Array(P);
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;
  let beta1Pow = 1;
  let beta2Pow = 1;
  const pre = new Float64Array(N * H);
  const out = new Float64Array(N);
  let loss = 0;

  for (let epoch = 0; epoch < config.epochs; epoch++) {
    // Forward.
    loss = 0;
    for (let n = 0; n < N; n++) {
      let o = params[oB2] ?? 0;
      for (let j = 0; j < H; j++) {
        let a = params[oB1 + j] ?? 0;
        for (let k = 0; k < F; k++) a += (z[n * F + k] ?? 0) * (params[oW1 + k * H + j] ?? 0);
        pre[n * H + j] = a;
        if (a > 0) o += a * (params[oW2 + j] ?? 0);
      }
      out[n] = o;
      const d = o - (y[n] ?? 0);
      loss += d * d;
    }
    loss /= N;
    // Backward: d(mean squared error)/d(out) = 2 (out - y) / N.
    grad.fill(0);
    for (let n = 0; n < N; n++) {
      const dOut = (2 * ((out[n] ?? 0) - (y[n] ?? 0))) / N;
      grad[oB2] = (grad[oB2] ?? 0) + dOut;
      for (let j = 0; j < H; j++) {
        const a = pre[n * H + j] ?? 0;
        if (a <= 0) continue;
        grad[oW2 + j] = (grad[oW2 + j] ?? 0) + dOut * a;
        const dA = dOut * (params[oW2 + j] ?? 0);
        grad[oB1 + j] = (grad[oB1 + j] ?? 0) + dA;
        for (let k = 0; k < F; k++) grad[oW1 + k * H + j] = (grad[oW1 + k * H + j] ?? 0) + dA * (z[n * F + k] ?? 0);
      }
    }
    // L2 penalty (weightDecay/2 · ‖W‖²) on the two weight matrices.
    for (let i = 0; i < F * H; i++) grad[oW1 + i] = (grad[oW1 + i] ?? 0) + config.weightDecay * (params[oW1 + i] ?? 0);
    for (let j = 0; j < H; j++) grad[oW2 + j] = (grad[oW2 + j] ?? 0) + config.weightDecay * (params[oW2 + j] ?? 0);
    // Adam; the bias-correction powers are running products rather than Math.pow, to stay exactly reproducible.
    beta1Pow *= beta1;
    beta2Pow *= beta2;
    for (let i = 0; i < P; i++) {
      const g = grad[i] ?? 0;
      const mi = beta1 * (m[i] ?? 0) + (1 - beta1) * g;
      const vi = beta2 * (v[i] ?? 0) + (1 - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      const mHat = mi / (1 - beta1Pow);
      const vHat = vi / (1 - beta2Pow);
      params[i] = (params[i] ?? 0) - (config.learningRate * mHat) / (Math.sqrt(vHat) + eps);
    }
  }

  const w1 = Float32Array.from(params.subarray(oW1, oB1));
  const b1 = Float32Array.from(params.subarray(oB1, oW2));
  // Fold "× yStd + yMean" into the output layer so the graph emits mpg directly.
  const w2 = Float32Array.from(params.subarray(oW2, oB2), (w) => w * yStd);
  const b2 = Float32Array.of((params[oB2] ?? 0) * yStd + yMean);
  return { weights: { featureMean: mean, featureStd: std, w1, b1, w2, b2, hidden: H }, finalLoss: loss };
}

/** Encodes trained weights as the cars-mpg ONNX graph: Sub → Div → MatMul → Add → Relu → MatMul → Add. */
export function encodeCarsMpg(weights: CarsMpgWeights): Uint8Array {
  const H = weights.hidden;
  return encodeModel({
    name: 'cars_mpg',
    docString:
      'Predicts miles per US gallon from [cylinders, displacement (cu in), horsepower, weight (lb), ' +
      'acceleration 0-60 mph (s), model year (four digits)]. Standardisation is part of the graph: send raw values.',
    nodes: [
      node('Sub', ['features', 'feature_mean'], ['centered']),
      node('Div', ['centered', 'feature_std'], ['standardized']),
      node('MatMul', ['standardized', 'fc1.weight'], ['fc1.matmul']),
      node('Add', ['fc1.matmul', 'fc1.bias'], ['fc1.out']),
      node('Relu', ['fc1.out'], ['fc1.relu']),
      node('MatMul', ['fc1.relu', 'fc2.weight'], ['fc2.matmul']),
      node('Add', ['fc2.matmul', 'fc2.bias'], ['mpg']),
    ],
    initializers: [
      floatInitializer('feature_mean', [F], weights.featureMean),
      floatInitializer('feature_std', [F], weights.featureStd),
      floatInitializer('fc1.weight', [F, H], weights.w1),
      floatInitializer('fc1.bias', [H], weights.b1),
      floatInitializer('fc2.weight', [H, 1], weights.w2),
      floatInitializer('fc2.bias', [1], weights.b2),
    ],
    inputs: [floatValueInfo('features', [BATCH_DIM, F], `raw features: ${CARS_FEATURE_NAMES.join(', ')}`)],
    outputs: [floatValueInfo('mpg', [BATCH_DIM, 1], 'predicted miles per US gallon')],
    metadata: [
      ['feature_names', CARS_FEATURE_NAMES.join(',')],
      ['feature_units', CARS_FEATURE_UNITS.join(',')],
      ['target', 'miles per US gallon'],
      ['dataset', 'vega-datasets cars.json (UCI Auto MPG)'],
    ],
  });
}

/** Loads the data, splits, trains, evaluates and encodes: the whole cars-mpg build as one pure function. */
export function buildCarsMpg(config: CarsMpgConfig = CARS_MPG_CONFIG): CarsMpgBuild {
  const path = carsDatasetPath();
  const fileText = readFileSync(path);
  const rows = loadCars(path);
  const rowsTotal = (JSON.parse(fileText.toString('utf8')) as unknown[]).length;
  const { train: trainRows, holdout } = splitCars(rows, config);
  const { mean, std } = standardisation(trainRows);
  const { weights, finalLoss } = train(trainRows, mean, std, config);

  const trainMetrics = regressionMetrics(
    predictCarsMpg(weights, trainRows),
    trainRows.map((r) => r.mpg),
  );
  const holdoutMetrics = regressionMetrics(
    predictCarsMpg(weights, holdout),
    holdout.map((r) => r.mpg),
  );
  const trainMean = trainRows.reduce((s, r) => s + r.mpg, 0) / trainRows.length;
  const evalReport: CarsMpgEval = {
    model: 'cars-mpg',
    dataset: {
      source: 'vega-datasets/data/cars.json (UCI Auto MPG)',
      sha256: sha256Hex(fileText),
      rows_total: rowsTotal,
      rows_used: rows.length,
    },
    split: {
      seed: config.seed,
      train_rows: trainRows.length,
      holdout_rows: holdout.length,
      method: `mulberry32 Fisher-Yates shuffle, first round(${config.trainFraction} * n) rows train`,
    },
    network: `${F} -> standardise -> ${config.hidden} ReLU -> 1`,
    training: {
      optimizer: 'full-batch Adam (beta1 0.9, beta2 0.999, eps 1e-8), float64',
      epochs: config.epochs,
      learning_rate: config.learningRate,
      weight_decay: config.weightDecay,
      loss: 'mean squared error on the standardised target',
      final_train_loss: finalLoss,
    },
    metrics: { train: trainMetrics, holdout: holdoutMetrics },
    baselines: {
      holdout_predict_train_mean: regressionMetrics(
        holdout.map(() => trainMean),
        holdout.map((r) => r.mpg),
      ),
      holdout_linear_least_squares: linearBaseline(trainRows, holdout, mean, std),
    },
    feature_names: [...CARS_FEATURE_NAMES],
    standardisation: Object.fromEntries(
      CARS_FEATURE_NAMES.map((name, k) => [name, { mean: mean[k] ?? 0, std: std[k] ?? 0 }]),
    ),
  };
  return { onnx: encodeCarsMpg(weights), eval: evalReport, weights };
}
