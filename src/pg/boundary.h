// The one error boundary between C++ exceptions and Postgres' ereport/longjmp.
//
//  Postgres -> C++:  every SQL-callable function and trigger is declared with SB_PG_FUNCTION,
//                    every background worker main with SB_BGWORKER_MAIN; both run the body
//                    through Boundary(). A C++ exception is caught, its text copied into a
//                    static buffer, and only after the catch block has ended is ereport(ERROR)
//                    raised, so no C++ frame with a destructor is live when Postgres jumps.
//                    PG_FUNCTION_INFO_V1 itself does not compile (pg/prelude.h), so no entry
//                    point can skip the boundary. Hooks and callbacks Postgres calls (the
//                    ProcessUtility hook, the xact callback, shmem hooks, on_shmem_exit) are
//                    written C-style instead: no C++ objects, nothing that throws.
//  C++ -> Postgres:  code that holds C++ objects calls Postgres through Guarded(), which turns
//                    an ereport into a thrown PgError after PG_END_TRY. The lambda given to
//                    Guarded must itself hold no objects with destructors; a C++ exception
//                    thrown inside it is caught within the PG_TRY and rethrown after it.
//  ereport:          ereport(ERROR) only where no C++ object is alive in any frame it jumps
//                    over (in C++ code: Fail() instead). Even ereport(LOG) may jump: it ends
//                    with CHECK_FOR_INTERRUPTS(), which raises a pending cancel; C++ code
//                    with objects alive logs through Report().
//  Subtransaction:   an RAII internal subtransaction: a PgError thrown inside its scope rolls it
//                    back on unwinding, so one bad row does not end the caller's transaction.
//                    Between the error and the rollback only C++ code runs (as in plpgsql's
//                    exception blocks: copy the error, flush it, roll back).
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

#include "pg/prelude.h"

namespace switchboard {

// A Postgres error carried through C++ frames.
class PgError : public std::runtime_error {
public:
	PgError(int sqlerrcode, const std::string &message, std::string detail = "", std::string hint = "")
	    : std::runtime_error(message), sqlerrcode(sqlerrcode), detail(std::move(detail)), hint(std::move(hint))
	{
	}
	int sqlerrcode;
	std::string detail;
	std::string hint;
};

// Errors that say nothing about the statement or the data (a deadlock, a serialization
// failure, a lock or statement timeout, a cancel, out of memory or disk, an I/O error): what
// raised them is tried again later, never refused or turned into a dead letter for it.
bool TransientError(int sqlerrcode);

// Convenience: a user-facing error with an explicit SQLSTATE.
[[noreturn]] void Fail(int sqlerrcode, const std::string &message, const std::string &detail = "",
                       const std::string &hint = "");

namespace detail {
struct CaughtError {
	int sqlerrcode;
	bool caught;
};
void Capture(CaughtError *out, const std::exception *e) noexcept;
[[noreturn]] void Rethrow(const CaughtError *err);
void GuardedCall(void (*fn)(void *), void *arg); // throws PgError

template <typename F>
bool
RunCaught(F &body, Datum *result, CaughtError *err) noexcept
{
	// Postgres' error state as the caller left it. C++ code that exits a PG_TRY (or pushes
	// an error context callback) by throwing leaves these pointing into a frame that no
	// longer exists; the ereport that Rethrow raises would then jump into, or call through,
	// dead stack. Putting them back makes the boundary safe whatever the body did.
	sigjmp_buf *saved_exception_stack = PG_exception_stack;
	ErrorContextCallback *saved_context_stack = error_context_stack;
	try {
		*result = body();
		// A body that returned from inside a PG_TRY left the same dangling pointer behind.
		PG_exception_stack = saved_exception_stack;
		error_context_stack = saved_context_stack;
		return true;
	} catch (const std::exception &e) {
		Capture(err, &e);
	} catch (...) {
		Capture(err, nullptr);
	}
	PG_exception_stack = saved_exception_stack;
	error_context_stack = saved_context_stack;
	return false;
}
} // namespace detail

// Postgres -> C++: runs body (returning Datum); a C++ exception leaving it becomes ereport(ERROR).
// Entry points get it through SB_PG_FUNCTION / SB_BGWORKER_MAIN below.
template <typename F>
Datum
Boundary(F &&body)
{
	Datum result = 0;
	detail::CaughtError err{0, false};
	if (!detail::RunCaught(body, &result, &err))
		detail::Rethrow(&err); // ereport(ERROR) with no C++ object alive in this frame
	return result;
}

// C++ -> Postgres: runs fn; a Postgres error becomes a thrown PgError.
template <typename F>
void
Guarded(F &&fn)
{
	detail::GuardedCall([](void *p) { (*static_cast<F *>(p))(); }, &fn);
}

// ereport(elevel) of message, elevel below ERROR, from a frame that holds C++ objects: the
// interrupt check at the end of any ereport may raise a cancel, which arrives as a PgError.
void Report(int elevel, const std::string &message);

// Usage: { Subtransaction sub; ...work that may throw PgError...; sub.Commit(); }
class Subtransaction {
public:
	Subtransaction();
	~Subtransaction(); // rolls back unless committed
	void Commit();
	Subtransaction(const Subtransaction &) = delete;
	Subtransaction &operator=(const Subtransaction &) = delete;

private:
	MemoryContext memory_context_;
	void *resource_owner_;
	bool done_ = false;
};

} // namespace switchboard

// SQL-callable function (or trigger function) `name`, its body run through Boundary:
//
//   SB_PG_FUNCTION(switchboard_wake)
//   {
//       SetWorkerLatch(MyDatabaseId);
//       PG_RETURN_VOID();
//   }
//
// The body is a function of FunctionCallInfo fcinfo returning Datum, so PG_GETARG_* and
// PG_RETURN_* work in it as usual. It may call Postgres (or ereport) directly only while it
// holds no C++ object: the longjmp then passes just Boundary's frames, which hold none. The finfo record is what
// PG_FUNCTION_INFO_V1 declares (version-1 calling convention); that macro is disabled in pg/prelude.h so that an entry
// point without the boundary does not compile. Use at file scope, outside any namespace.
#define SB_PG_FUNCTION(name)                                                                                           \
	static Datum name##_body(FunctionCallInfo fcinfo);                                                                 \
	extern "C" {                                                                                                       \
	PGDLLEXPORT Datum name(PG_FUNCTION_ARGS);                                                                          \
	PGDLLEXPORT const Pg_finfo_record *pg_finfo_##name(void);                                                          \
	const Pg_finfo_record *pg_finfo_##name(void)                                                                       \
	{                                                                                                                  \
		static const Pg_finfo_record finfo = {1};                                                                      \
		return &finfo;                                                                                                 \
	}                                                                                                                  \
	Datum name(PG_FUNCTION_ARGS)                                                                                       \
	{                                                                                                                  \
		return ::switchboard::Boundary([&] { return name##_body(fcinfo); });                                           \
	}                                                                                                                  \
	}                                                                                                                  \
	static Datum name##_body(FunctionCallInfo fcinfo)

// Background worker entry point `name` (bgw_function_name), its body run through Boundary.
// The body gets Datum main_arg and returns nothing; when it returns, Postgres ends the process
// with proc_exit(0). An error leaving it is logged by Postgres' own handler (the process exits).
#define SB_BGWORKER_MAIN(name)                                                                                         \
	static void name##_body(Datum main_arg);                                                                           \
	extern "C" {                                                                                                       \
	PGDLLEXPORT void name(Datum main_arg);                                                                             \
	void name(Datum main_arg)                                                                                          \
	{                                                                                                                  \
		::switchboard::Boundary([&] {                                                                                  \
			name##_body(main_arg);                                                                                     \
			return (Datum) 0;                                                                                          \
		});                                                                                                            \
	}                                                                                                                  \
	}                                                                                                                  \
	static void name##_body(Datum main_arg)
