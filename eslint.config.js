// SPDX-License-Identifier: Apache-2.0
// Lint configuration: type-aware rules from typescript-eslint (strictTypeChecked) plus the
// project's dependency rule (data-plane components never import the controller).
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['node_modules/**', 'dist/**', 'build/**', '.tap/**', 'src/shared/gen/**', 'eslint.config.js'],
  },
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
      // @kubernetes/client-node declares its API models (V1Pod, …) as field-only classes, while
      // the API and our manifest reader produce plain JSON objects of those shapes, which we
      // copy with spreads.
      '@typescript-eslint/no-unsafe-class-instance-assignment': 'off',
      '@typescript-eslint/no-misused-spread': 'off',
    },
  },
  {
    files: ['ztunnel/**/*.ts', 'cni-plugin/**/*.ts', 'waypoint/**/*.ts', 'src/shared/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/src/controller/**', '**/controller/**'],
              message:
                'data-plane code and src/shared must not import the controller (ARCHITECTURE.md, dependency rule)',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      // tap's t.test() returns a promise that tap itself tracks; async subtests without await are the idiom.
      '@typescript-eslint/no-floating-promises': 'off',
      '@typescript-eslint/require-await': 'off',
    },
  },
);
