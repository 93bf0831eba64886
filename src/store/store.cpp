#include "store/store.h"

namespace ig::store {

std::string_view to_string(LedgerKind kind) {
  switch (kind) {
    case LedgerKind::kGrant:
      return "grant";
    case LedgerKind::kAdjust:
      return "adjust";
    case LedgerKind::kReserve:
      return "reserve";
    case LedgerKind::kSettle:
      return "settle";
    case LedgerKind::kRefund:
      return "refund";
  }
  return "unknown";
}

std::string_view to_string(HoldState state) {
  switch (state) {
    case HoldState::kOpen:
      return "open";
    case HoldState::kSettled:
      return "settled";
    case HoldState::kRefunded:
      return "refunded";
  }
  return "unknown";
}

std::string_view to_string(DeliveryState state) {
  switch (state) {
    case DeliveryState::kPending:
      return "pending";
    case DeliveryState::kSucceeded:
      return "succeeded";
    case DeliveryState::kFailed:
      return "failed";
  }
  return "unknown";
}

}  // namespace ig::store
