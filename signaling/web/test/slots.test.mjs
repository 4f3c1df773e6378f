// The per-recipient bounds of the page as a sender (streams, block-hash requests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Slots } from '../upload.js';

test('slots_beyond_max_wait_in_order_and_are_handed_over', async () => {
  const s = new Slots(2);
  const order = [];
  await s.take('a');
  await s.take('a');
  const third = s.take('a').then(() => order.push(3));
  const fourth = s.take('a').then(() => order.push(4));
  await s.take('b'); // another key is not held up
  await Promise.resolve();
  assert.deepEqual(order, []);
  s.give('a');
  await third;
  assert.deepEqual(order, [3]);
  s.give('a');
  await fourth;
  assert.deepEqual(order, [3, 4]);
  s.give('a');
  s.give('a');
  assert.equal(s.keys.has('a'), false);
});
