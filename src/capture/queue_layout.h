// Column positions of switchboard.queue (src/sql/20_queue.sql). The capture trigger forms queue
// tuples directly, so these must match; CheckQueueLayout() verifies them once per backend.
#pragma once

namespace switchboard {
enum QueueColumn {
	kQueueId = 1,
	kQueueRoute,
	kQueueOp,
	kQueueNew,
	kQueueOld,
	kQueueCapturedAt,
	kQueueState,
	kQueueAttempts,
	kQueueNextAttemptAt,
	kQueueKey,
	kQueueLastStatus,
	kQueueLastError,
	kQueueFailedAt,
	kQueuePayload,
	kQueueColumns = kQueuePayload
};
} // namespace switchboard
