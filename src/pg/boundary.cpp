#include "pg/boundary.h"

#include <cstring>

extern "C" {
#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
}

namespace switchboard {

namespace {
// Static so that nothing needs freeing when ereport jumps away.
char message_buf[4096];
char detail_buf[2048];
char hint_buf[1024];

void
CopyText(char *dst, size_t size, const char *src)
{
	if (src == nullptr) {
		dst[0] = '\0';
		return;
	}
	strlcpy(dst, src, size);
}
} // namespace

bool
TransientError(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode)) {
	case ERRCODE_TRANSACTION_ROLLBACK:   // 40: serialization failure, deadlock
	case ERRCODE_INSUFFICIENT_RESOURCES: // 53: out of memory, disk full
	case ERRCODE_OPERATOR_INTERVENTION:  // 57: cancel, statement timeout, shutdown
	case ERRCODE_SYSTEM_ERROR:           // 58: I/O
		return true;
	default:
		return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE; // 55P03: lock_timeout, NOWAIT
	}
}

void
Fail(int sqlerrcode, const std::string &message, const std::string &detail, const std::string &hint)
{
	throw PgError(sqlerrcode, message, detail, hint);
}

namespace detail {

void
Capture(CaughtError *out, const std::exception *e) noexcept
{
	out->caught = true;
	out->sqlerrcode = ERRCODE_INTERNAL_ERROR;
	detail_buf[0] = hint_buf[0] = '\0';
	if (e == nullptr) {
		CopyText(message_buf, sizeof message_buf, "unknown C++ exception");
		return;
	}
	CopyText(message_buf, sizeof message_buf, e->what());
	if (auto pg = dynamic_cast<const PgError *>(e)) {
		out->sqlerrcode = pg->sqlerrcode;
		CopyText(detail_buf, sizeof detail_buf, pg->detail.c_str());
		CopyText(hint_buf, sizeof hint_buf, pg->hint.c_str());
	} else if (dynamic_cast<const std::invalid_argument *>(e)) {
		out->sqlerrcode = ERRCODE_INVALID_PARAMETER_VALUE;
	} else if (dynamic_cast<const std::bad_alloc *>(e)) {
		out->sqlerrcode = ERRCODE_OUT_OF_MEMORY;
	}
}

void
Rethrow(const CaughtError *err)
{
	ereport(ERROR, (errcode(err->sqlerrcode), errmsg("%s", message_buf),
	                detail_buf[0] ? errdetail("%s", detail_buf) : 0, hint_buf[0] ? errhint("%s", hint_buf) : 0));
	pg_unreachable();
}

namespace {
// Runs fn and keeps any C++ exception it throws here, in *error. GuardedCall calls it inside
// PG_TRY: an exception unwinding out of the PG_TRY block would skip PG_END_TRY and leave
// PG_exception_stack pointing at that block's sigjmp_buf after its frame is gone, so the next
// ereport(ERROR) anywhere would jump into dead stack. noexcept makes any slip terminate
// rather than unwind. A Postgres error still longjmps straight out of here to the PG_TRY:
// this frame holds nothing with a destructor (error belongs to the caller).
void
CallKeepingException(void (*fn)(void *), void *arg, std::exception_ptr *error) noexcept
{
	try {
		fn(arg);
	} catch (...) {
		*error = std::current_exception();
	}
}
} // namespace

void
GuardedCall(void (*fn)(void *), void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorData *volatile edata = nullptr;
	// Declared before the PG_TRY and reached only through its address, so a longjmp back to
	// the PG_TRY can neither skip its destructor nor clobber it.
	std::exception_ptr cpp_error;
	PG_TRY();
	{
		CallKeepingException(fn, arg, &cpp_error);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();
	// PG_END_TRY has put PG_exception_stack and error_context_stack back: only now may a
	// C++ exception travel on.
	if (cpp_error) {
		MemoryContextSwitchTo(oldcxt);
		std::rethrow_exception(cpp_error);
	}
	if (edata != nullptr) {
		PgError error(edata->sqlerrcode, edata->message ? edata->message : "unknown error",
		              edata->detail ? edata->detail : "", edata->hint ? edata->hint : "");
		FreeErrorData(edata);
		throw error;
	}
}

} // namespace detail

void
Report(int elevel, const std::string &message)
{
	Assert(elevel < ERROR); // errors are thrown (Fail), not reported
	const char *text = message.c_str();
	Guarded([&] { ereport(elevel, (errmsg("%s", text))); });
}

Subtransaction::Subtransaction() : memory_context_(CurrentMemoryContext), resource_owner_(CurrentResourceOwner)
{
	Guarded([] { BeginInternalSubTransaction(nullptr); });
	MemoryContextSwitchTo(memory_context_);
}

void
Subtransaction::Commit()
{
	Guarded([] { ReleaseCurrentSubTransaction(); });
	done_ = true;
	MemoryContextSwitchTo(memory_context_);
	CurrentResourceOwner = static_cast<ResourceOwner>(resource_owner_);
}

Subtransaction::~Subtransaction()
{
	if (done_)
		return;
	// A Postgres error here would have nowhere to go; rollback of an internal
	// subtransaction is what plpgsql does in the same spot.
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(memory_context_);
	CurrentResourceOwner = static_cast<ResourceOwner>(resource_owner_);
}
} // namespace switchboard
