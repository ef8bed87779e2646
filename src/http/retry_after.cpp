// Retry-After (RFC 9110 §10.2.3): delta-seconds and the three HTTP-date forms.
#include "http/retry_after.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <vector>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

// A delta-seconds value this large is nonsense anyway; saturating keeps the arithmetic
// in range (the caller caps at one hour).
constexpr long kMaxDeltaSeconds = 100L * 365 * 24 * 3600;

bool
EqualsIgnoreCase(const std::string &a, const char *b)
{
	size_t i = 0;
	for (; i < a.size() && b[i] != '\0'; i++) {
		if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
			return false;
	}
	return i == a.size() && b[i] == '\0';
}

std::string
Trim(const std::string &s)
{
	size_t begin = s.find_first_not_of(" \t\r\n");
	if (begin == std::string::npos)
		return std::string();
	size_t end = s.find_last_not_of(" \t\r\n");
	return s.substr(begin, end - begin + 1);
}

bool
AllDigits(const std::string &s)
{
	if (s.empty())
		return false;
	return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses a short run of digits; false when not all digits or too long to be a date part.
bool
SmallNumber(const std::string &s, int *out)
{
	if (!AllDigits(s) || s.size() > 4)
		return false;
	*out = std::stoi(s);
	return true;
}

// 1..12 for an English three-letter month name, 0 otherwise. HTTP-dates are case-sensitive,
// but being lenient here costs nothing.
int
MonthNumber(const std::string &s)
{
	static const char *const kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
	                                      "jul", "aug", "sep", "oct", "nov", "dec"};
	for (int i = 0; i < 12; i++) {
		if (EqualsIgnoreCase(s, kMonths[i]))
			return i + 1;
	}
	return 0;
}

bool
IsLeapYear(int year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int
DaysInMonth(int year, int month)
{
	static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return month == 2 && IsLeapYear(year) ? 29 : kDays[month - 1];
}

// Leap years in [1, year], by the Gregorian rule.
int64_t
LeapYearsThrough(int year)
{
	return year / 4 - year / 100 + year / 400;
}

// Days from 1970-01-01 to the given date (year >= 1970). Written out rather than using
// timegm(), whose behaviour depends on the process's TZ handling.
int64_t
DaysSinceEpoch(int year, int month, int day)
{
	int64_t days = 365 * static_cast<int64_t>(year - 1970) + LeapYearsThrough(year - 1) - LeapYearsThrough(1969);
	for (int m = 1; m < month; m++)
		days += DaysInMonth(year, m);
	return days + day - 1;
}

bool
ParseClock(const std::string &s, int *hour, int *minute, int *second)
{
	if (s.size() != 8 || s[2] != ':' || s[5] != ':')
		return false;
	if (!SmallNumber(s.substr(0, 2), hour) || !SmallNumber(s.substr(3, 2), minute) ||
	    !SmallNumber(s.substr(6, 2), second))
		return false;
	// 60 allows a leap second, which the date grammar permits.
	return *hour <= 23 && *minute <= 59 && *second <= 60;
}

// Splits on spaces, commas and dashes, which separate the fields of all three HTTP-date forms.
std::vector<std::string>
DateTokens(const std::string &s)
{
	std::vector<std::string> tokens;
	std::string current;
	for (char c : s) {
		if (c == ' ' || c == ',' || c == '-' || c == '\t') {
			if (!current.empty())
				tokens.push_back(current);
			current.clear();
		} else {
			current += c;
		}
	}
	if (!current.empty())
		tokens.push_back(current);
	return tokens;
}

// Unix ms of an HTTP-date, or -1.
//   IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
//   RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT
//   asctime:     Sun Nov  6 08:49:37 1994
int64_t
ParseHttpDate(const std::string &s)
{
	std::vector<std::string> t = DateTokens(s);
	if (t.size() < 5 || !std::isalpha(static_cast<unsigned char>(t[0][0])))
		return -1;
	int day = 0, month = 0, year = 0, hour = 0, minute = 0, second = 0;
	if (AllDigits(t[1])) {
		if (t.size() != 6 || !(EqualsIgnoreCase(t[5], "GMT") || EqualsIgnoreCase(t[5], "UTC")))
			return -1;
		if (!SmallNumber(t[1], &day) || (month = MonthNumber(t[2])) == 0 || !SmallNumber(t[3], &year) ||
		    !ParseClock(t[4], &hour, &minute, &second))
			return -1;
		if (t[3].size() == 2)
			// RFC 850's two-digit year: RFC 9110 says to read it as the most recent past
			// year with those digits; any date a server sends us is after 1970.
			year += year < 70 ? 2000 : 1900;
		else if (t[3].size() != 4)
			return -1;
	} else {
		if (t.size() != 5)
			return -1;
		if ((month = MonthNumber(t[1])) == 0 || !SmallNumber(t[2], &day) ||
		    !ParseClock(t[3], &hour, &minute, &second) || !SmallNumber(t[4], &year) || t[4].size() != 4)
			return -1;
	}
	if (year < 1970 || day < 1 || day > DaysInMonth(year, month))
		return -1;
	int64_t seconds = DaysSinceEpoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
	return seconds * 1000;
}

} // namespace

long
ParseRetryAfterValue(const std::string &raw, int64_t now_ms)
{
	std::string value = Trim(raw);
	if (value.empty())
		return -1;
	if (AllDigits(value)) {
		long seconds = 0;
		for (char c : value) {
			seconds = seconds * 10 + (c - '0');
			if (seconds > kMaxDeltaSeconds) {
				seconds = kMaxDeltaSeconds;
				break;
			}
		}
		return seconds * 1000;
	}
	int64_t at_ms = ParseHttpDate(value);
	if (at_ms < 0)
		return -1;
	// A date already past means "now"; a clock skew between us and the remote can cause it.
	return at_ms <= now_ms ? 0 : static_cast<long>(at_ms - now_ms);
}

long
ParseRetryAfter(const Headers &headers, int64_t now_ms)
{
	for (const auto &header : headers) {
		if (EqualsIgnoreCase(header.first, "retry-after"))
			return ParseRetryAfterValue(header.second, now_ms);
	}
	return -1;
}

long
RetryAfterMs(const HttpResponse &response)
{
	int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
	                     std::chrono::system_clock::now().time_since_epoch())
	                     .count();
	return ParseRetryAfter(response.headers, now_ms);
}

} // namespace switchboard
